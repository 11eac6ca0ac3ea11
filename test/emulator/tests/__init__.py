"""The emulator's tests, a module a topic; ../test_ec2emu.py runs them all."""
