"""The fixture lab: real DNS, SMTP and HTTPS servers on loopback that play a world of mail domains.

    world = load_world(demo_world_path())
    async with open_lab(world, workdir) as lab:
        ...  # scan with lab.scanner_args()

See `scanner.lab.world` for the world file format.
"""

from scanner.lab.certificates import CertificateMint, default_mint
from scanner.lab.runner import (
    BoundLab,
    Lab,
    bind_lab,
    demo_world_path,
    lab_in_thread,
    open_lab,
    serve_bound,
    serve_forever,
)
from scanner.lab.world import (
    CertificateKind,
    Domain,
    Expectation,
    MxSpec,
    NameRecords,
    PolicyBehaviour,
    PolicyHost,
    SmtpBehaviour,
    SmtpServer,
    World,
    WorldError,
    load_world,
    parse_world,
)

__all__ = [
    "BoundLab",
    "CertificateKind",
    "CertificateMint",
    "Domain",
    "Expectation",
    "Lab",
    "MxSpec",
    "NameRecords",
    "PolicyBehaviour",
    "PolicyHost",
    "SmtpBehaviour",
    "SmtpServer",
    "World",
    "WorldError",
    "bind_lab",
    "default_mint",
    "demo_world_path",
    "lab_in_thread",
    "load_world",
    "open_lab",
    "parse_world",
    "serve_bound",
    "serve_forever",
]
