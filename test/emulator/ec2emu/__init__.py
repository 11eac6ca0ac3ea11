"""ec2emu: a local EC2 Query API + IMDSv2 emulator for the ami_snapshot tests.

test/emulator/ec2emu.py runs it; test/emulator/README.md describes its
usage, config and control API.  The modules, from the bottom up:

  util               timestamps, resource ids, atomic writes
  errors             EC2's error codes, EC2Error, resource id checks
  query              a Query request: form pairs, their tree, the actions'
                     parameter specs, filters, pages, tags
  render             the XML of responses and errors
  sigv4              SigV4 signatures recomputed with botocore
  volumes            point-in-time copies of backing files (reflink, sparse)
  config             the config file and the run-time settings
"""

from .sigv4 import parse_authorization, sigv4_signature
from .util import API_VERSION, parse_iso
from .errors import EC2Error
from .query import SPECS, unflatten, validate
from .volumes import copy_volume
from .config import ConfigError, load_config

_validate = validate          # its name when the emulator was one file (the tests use it)

__all__ = ["API_VERSION", "SPECS", "ConfigError", "EC2Error", "copy_volume", "load_config",
           "parse_authorization", "parse_iso", "sigv4_signature", "unflatten", "validate"]
