"""scanner: active STARTTLS probe and MTA-STS downgrade-detection scanner."""

__version__ = "0.1.0"
