"""In-process checks of the package's pieces: SigV4 reference vectors, the
Authorization header, query parsing and validation, the sparse copy."""

import os
import shutil
import tempfile
import unittest

from .support import MIB, ec2emu, read, write_at


# --------------------------------------------------------------------------
# SigV4 reference vectors (in-process)
# --------------------------------------------------------------------------

class TestSigV4Vectors(unittest.TestCase):
    SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    HDR = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]

    def sign(self, method, url, headers, body=b""):
        signed = [h.lower() for h, _ in headers]
        return ec2emu.sigv4_signature(method, url, headers, signed, body, self.SECRET,
                                      "us-east-1", "service", "20150830T123600Z",
                                      "AKIDEXAMPLE")[0]

    def test_get_vanilla(self):
        self.assertEqual(self.sign("GET", "https://example.amazonaws.com/", self.HDR),
                         "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")

    def test_get_vanilla_query_order_key_case(self):
        self.assertEqual(
            self.sign("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", self.HDR),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")

    def test_post_x_www_form_urlencoded(self):
        hdr = [("Content-Type", "application/x-www-form-urlencoded")] + self.HDR
        self.assertEqual(
            self.sign("POST", "https://example.amazonaws.com/", hdr, b"Param1=value1"),
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")

    def test_parse_authorization(self):
        a = ec2emu.parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/20200101/us-east-1/ec2/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "a" * 64)
        self.assertEqual((a["akid"], a["region"], a["service"], a["signed"]),
                         ("AK", "us-east-1", "ec2", ["host", "x-amz-date"]))
        for bad in ("Bearer xyz", "AWS4-HMAC-SHA256 Credential=AK/x, SignedHeaders=host, "
                    "Signature=" + "a" * 64, "AWS4-HMAC-SHA256 SignedHeaders=host"):
            with self.assertRaises(ec2emu.EC2Error):
                ec2emu.parse_authorization(bad)

    def test_query_unflatten_and_validate(self):
        pairs = [("TagSpecification.2.ResourceType", "snapshot"),
                 ("TagSpecification.1.Tag.10.Key", "k10"), ("TagSpecification.1.Tag.2.Key", "k2"),
                 ("TagSpecification.1.ResourceType", "snapshot"), ("DryRun", "TRUE")]
        v = ec2emu._validate(ec2emu.unflatten(pairs), ec2emu.SPECS["CreateSnapshots"], [])
        self.assertEqual(v["TagSpecification"][0]["Tag"], [{"Key": "k2"}, {"Key": "k10"}])
        self.assertIs(v["DryRun"], True)
        for bad, code in (([("Bogus", "1")], "UnknownParameter"),
                          ([("DryRun", "maybe")], "InvalidParameterValue"),
                          ([("TagSpecification.x.ResourceType", "a")], "UnknownParameter"),
                          ([("Description", "a"), ("Description.1", "b")], "InvalidParameterValue")):
            with self.assertRaises(ec2emu.EC2Error) as cm:
                ec2emu._validate(ec2emu.unflatten(bad), ec2emu.SPECS["CreateSnapshots"], [])
            self.assertEqual(cm.exception.code, code)

    def test_sparse_copy(self):
        d = tempfile.mkdtemp(prefix="ec2emu-copy-")
        try:
            src = os.path.join(d, "src")
            with open(src, "wb") as f:
                f.truncate(8 * MIB)
            write_at(src, 5 * MIB, b"x" * 10000)
            info = ec2emu.copy_volume(src, os.path.join(d, "dst"))
            self.assertEqual(read(src), read(os.path.join(d, "dst")))
            self.assertIn(info["method"], ("reflink", "sparse", "sparse+copy_file_range"))
            self.assertLess(os.stat(os.path.join(d, "dst")).st_blocks * 512, 1 * MIB)
        finally:
            shutil.rmtree(d)
