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
