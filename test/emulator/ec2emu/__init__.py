"""ec2emu: a local EC2 Query API + IMDSv2 emulator for the ami_snapshot tests.

test/emulator/ec2emu.py runs it; test/emulator/README.md describes its
usage, config and control API.  The modules, from the bottom up:

  util               timestamps, resource ids, atomic writes
  errors             EC2's error codes, EC2Error, resource id checks
  query              a Query request: form pairs, their tree, the actions'
                     parameter specs, filters, pages, tags
  render             the XML of responses and errors
  sigv4              SigV4 signatures recomputed with botocore (also used by
                     test/unit/ec2_fake_server.py)
  volumes            point-in-time copies of backing files (reflink, sparse)
  config             the config file and the run-time settings
  faults             fault rules: validation and matching
  credentials        access keys, IMDS role credentials, authentication
  imds               the IMDSv2 tree and tokens, and its HTTP side
  actions_snapshots  CreateSnapshots, CreateSnapshot, DescribeSnapshots,
                     DeleteSnapshot
  actions_images     RegisterImage, CreateImage, DescribeImages,
                     DeregisterImage
  actions_volumes    CreateVolume, AttachVolume, DetachVolume, DeleteVolume;
                     the volumes' states and their loop devices
  actions_instances  DescribeInstances, DescribeVolumes
  actions_tags       CreateTags, DeleteTags, DescribeTags
  actions_copies     CopySnapshot (and its pre-signed URL), CopyImage
  actions_locks      LockSnapshot, UnlockSnapshot, DescribeLockedSnapshots
  actions_attributes Modify/Describe/ResetSnapshotAttribute,
                     Modify/DescribeImageAttribute
  model              Emulator: the state, its persistence, action dispatch
  control            the /_emulator/ control API
  server             the HTTP handler and servers; serve
  cli                ctl, call and main
"""

from .sigv4 import parse_authorization, sigv4_signature
from .util import API_VERSION, parse_iso
from .errors import EC2Error
from .query import SPECS, unflatten, validate
from .volumes import copy_volume
from .config import ConfigError, load_config
from .model import Emulator
from .cli import main

_validate = validate          # its name when the emulator was one file (the tests use it)

__all__ = ["API_VERSION", "SPECS", "ConfigError", "EC2Error", "Emulator", "copy_volume",
           "load_config", "main", "parse_authorization", "parse_iso", "sigv4_signature",
           "unflatten", "validate"]
