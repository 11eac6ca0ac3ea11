"""EC2's error codes, the EC2Error every check raises, and resource ids."""

import re


ERRORS = {
    # code: (HTTP status, default message)
    "AuthFailure": (401, "AWS was not able to validate the provided access credentials"),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the "
                              "signature you provided. Check your AWS Secret Access Key and "
                              "signing method. Consult the service documentation for details."),
    "IncompleteSignature": (400, "The request signature does not conform to AWS standards."),
    "MissingAuthenticationToken": (403, "The request must contain either a valid (registered) "
                                   "AWS access key ID or X.509 certificate."),
    "RequestExpired": (400, "Request has expired."),
    "ExpiredToken": (400, "The security token included in the request is expired"),
    "UnauthorizedOperation": (403, "You are not authorized to perform this operation."),
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "SnapshotCreationPerVolumeRateExceeded": (
        400, "The maximum per volume CreateSnapshot request rate has been exceeded. "
             "Use an increasing or variable sleep interval between requests."),
    "ConcurrentSnapshotLimitExceeded": (400, "You have exceeded the maximum number of "
                                        "concurrent snapshots."),
    "InternalError": (500, "An internal error has occurred."),
    "Unavailable": (503, "The server is overloaded and can't handle the request."),
    "DryRunOperation": (412, "Request would have succeeded, but DryRun flag is set."),
    "InvalidAction": (400, "The action is not valid for this web service."),
    "MissingParameter": (400, "A required parameter is missing."),
    "UnknownParameter": (400, "An unknown parameter was supplied."),
    "InvalidParameterValue": (400, "An invalid parameter value was supplied."),
    "InvalidParameterCombination": (400, "Invalid parameter combination."),
    "MalformedQueryString": (400, "The query string is malformed."),
    "MissingContentLength": (411, "The request must contain a Content-Length header."),
    "TagLimitExceeded": (400, "The maximum number of tags per resource has been exceeded."),
    "IdempotentParameterMismatch": (400, "The client token you have provided is associated "
                                    "with a resource that is already deleted, or the request "
                                    "parameters differ from the original request."),
}


class EC2Error(Exception):
    def __init__(self, code, message=None, status=None):
        default_status, default_msg = ERRORS.get(code, (400, code))
        self.code = code
        self.message = message if message is not None else default_msg
        self.status = status if status is not None else default_status
        super().__init__("%s: %s" % (code, self.message))


ID_PATTERNS = {
    "snap": re.compile(r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "vol": re.compile(r"^vol-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "i": re.compile(r"^i-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "ami": re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "subnet": re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "sg": re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"),
}
MALFORMED_CODE = {"snap": "InvalidSnapshotID.Malformed", "vol": "InvalidVolumeID.Malformed",
                  "i": "InvalidInstanceID.Malformed", "ami": "InvalidAMIID.Malformed",
                  "subnet": "InvalidSubnetID.Malformed", "sg": "InvalidGroupId.Malformed"}
NOTFOUND_CODE = {"snap": "InvalidSnapshot.NotFound", "vol": "InvalidVolume.NotFound",
                 "i": "InvalidInstanceID.NotFound", "ami": "InvalidAMIID.NotFound",
                 "subnet": "InvalidSubnetID.NotFound", "sg": "InvalidGroup.NotFound"}
NOTFOUND_MSG = {"snap": "The snapshot '%s' does not exist.",
                "vol": "The volume '%s' does not exist.",
                "i": "The instance ID '%s' does not exist",
                "ami": "The image id '[%s]' does not exist",
                "subnet": "The subnet ID '%s' does not exist",
                "sg": "The security group '%s' does not exist"}


def check_id(kind, value):
    if not ID_PATTERNS[kind].match(value or ""):
        raise EC2Error(MALFORMED_CODE[kind], "Invalid id: \"%s\"" % value)


def not_found(kind, value):
    return EC2Error(NOTFOUND_CODE[kind], NOTFOUND_MSG[kind] % value)
