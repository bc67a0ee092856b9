"""deploy/: the Kubernetes manifest, the Slurm script and the Containerfile agree with the README."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from scanner.core.inputs import Shard
from scanner.research.metadata import VANTAGE_NAME

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def manifest() -> dict[str, Any]:
    documents = list(
        yaml.safe_load_all((DEPLOY / "kubernetes-job.yaml").read_text(encoding="utf-8"))
    )
    assert len(documents) == 1
    document: dict[str, Any] = documents[0]
    return document


def container() -> dict[str, Any]:
    (only,) = manifest()["spec"]["template"]["spec"]["containers"]
    return dict(only)


def readme_commands() -> list[str]:
    """The shell commands of deploy/README.md's code blocks, continuation lines joined."""
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    joined = "\n".join(block.replace("\\\n", " ") for block in blocks)
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_manifest_is_an_indexed_job() -> None:
    job = manifest()
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"]
    args = container()["args"]
    assert args[0] == "scan"
    assert option(args, "--shard") == f"auto/{spec['completions']}"  # the count is the Job's
    assert f"of{spec['completions']}" in option(args, "--out")
    assert "--resume" in args
    assert VANTAGE_NAME.fullmatch(option(args, "--vantage"))
    for required in ("--ehlo-name", "--contact", "--exclude", "--input-format"):
        assert required in args


def test_the_manifest_runs_the_command_the_readme_names() -> None:
    command = "scanner " + " ".join(container()["args"])
    assert command in readme_commands()


def test_every_pod_index_gets_its_own_shard() -> None:
    completions = manifest()["spec"]["completions"]
    text = option(container()["args"], "--shard")
    shards = {
        Shard.parse(text, {"JOB_COMPLETION_INDEX": str(index)}) for index in range(completions)
    }
    assert shards == {Shard(index, completions) for index in range(completions)}


def test_the_slurm_script_runs_a_dense_array_with_auto_shards() -> None:
    text = (DEPLOY / "slurm-array.sh").read_text(encoding="utf-8")
    assert text.startswith("#!/bin/bash\n")
    assert re.search(r"^#SBATCH --array=\d+-\d+(:\d+)?$", text, re.MULTILINE)
    command = re.search(
        r"^scanner scan .*?(?<!\\)$", text.replace("\\\n", " "), re.MULTILINE | re.DOTALL
    )
    assert command is not None
    args = shlex.split(command.group(0))
    assert option(args, "--shard") == "auto"
    assert "--resume" in args
    assert VANTAGE_NAME.fullmatch(option(args, "--vantage"))


def test_the_containerfile_installs_the_scanner_and_runs_it_unprivileged() -> None:
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM \S+python:3\.1[1-9]", text, re.MULTILINE)
    assert "pip install --no-cache-dir ." in text
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["scanner"\]$', text, re.MULTILINE)
    assert manifest()["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    for copied in ("pyproject.toml", "scanner", "fixtures"):
        assert re.search(rf"^COPY .*\b{copied}\b", text, re.MULTILINE)


def test_the_readme_covers_running_responsibly() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for subject in ("PTR", "--contact", "--exclude", "port 25", "--shard auto", "jq -s"):
        assert subject in text


def test_the_staged_manifest_is_three_indexed_jobs_that_wait_for_the_stage_before() -> None:
    jobs = list(yaml.safe_load_all((DEPLOY / "kubernetes-stages.yaml").read_text(encoding="utf-8")))
    stages = []
    for job in jobs:
        spec = job["spec"]
        assert (job["kind"], spec["completionMode"]) == ("Job", "Indexed")
        assert spec["parallelism"] == spec["completions"] == 8
        pod = spec["template"]["spec"]
        (scanner,) = pod["containers"]
        args = scanner["args"]
        assert args[:2] == ["stage", args[1]]
        assert option(args, "--shard") == "auto/8"
        for required in ("--ehlo-name", "--contact", "--exclude"):
            assert required in args
        waits = [" ".join(init["args"]) for init in pod.get("initContainers", [])]
        stages.append((args[1], waits))
    assert [name for name, _ in stages] == ["discover", "probe", "verdict"]
    assert stages[0][1] == []
    assert "discover-*-of-8.targets" in stages[1][1][0]
    assert "-eq 8" in stages[1][1][0]
    assert "probe-*-of-8.jsonl.gz" in stages[2][1][0]
    assert ".failed" in stages[2][1][0]


def test_the_staged_slurm_script_chains_three_arrays_by_dependencies() -> None:
    text = (DEPLOY / "slurm-stages.sh").read_text(encoding="utf-8")
    assert text.startswith("#!/bin/bash\n")
    assert "--dependency=afterok:" in text
    assert re.search(r"^ARRAY=\d+-\d+$", text, re.MULTILINE)
    order = [
        text.index(f"scanner stage {name} --shard auto")
        for name in ("discover", "probe", "verdict")
    ]
    assert order == sorted(order)
    assert 'probe=$(submit probe "$discover"' in text
    assert 'verdict=$(submit verdict "$probe"' in text


def test_the_readme_runs_the_local_stages_script() -> None:
    commands = readme_commands()
    assert any(command.startswith("deploy/local-stages.sh 4 ") for command in commands)
    assert (DEPLOY / "local-stages.sh").stat().st_mode & 0o111
