#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""ec2emu -- local EC2 Query API + IMDSv2 emulator for the ami_snapshot tests.

One process, one ThreadingHTTPServer on 127.0.0.1:
  POST /                     EC2 Query API (SigV4 verified with botocore)
  GET/PUT /latest/...        IMDSv2 (also on --imds-port when given)
  /_emulator/{control,state,reset,health}   test control (loopback only)

CreateSnapshot(s) copies the volume backing files at call time (FICLONE
reflink, else a sparse SEEK_DATA/SEEK_HOLE copy) into --state-dir, so a test
can restore the snapshot and check its bytes.

This file only starts it: the code is the package ec2emu/ next to it (which
`import ec2emu` finds before this file).  Run with Debian's interpreter
(/usr/bin/python3): it has python3-botocore.  See README.md next to this
file for usage, the config schema and the control API.  Sub-commands:
    ec2emu.py [serve] --config C.json --port 0 --port-file F --state-dir D
    ec2emu.py ctl --port-file F {set k=v..|fault ACTION KIND [COUNT] [k=v..]|
                                 imds MODE [k=v..]|clear|reset [all]|state|
                                 rotate|expire|raw JSON|wait}
    ec2emu.py call --port-file F --config C.json ACTION [Param=Value ...]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ec2emu.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
