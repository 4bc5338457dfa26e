"""The Python tool's `dhurandhar.config` import path (see :mod:`dhurandhar.compat`)."""

from .compat import DEVICE_PROFILES, DeploymentProfile

__all__ = ["DEVICE_PROFILES", "DeploymentProfile"]
