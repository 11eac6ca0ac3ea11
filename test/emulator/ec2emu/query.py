"""Reading an EC2 Query request: the form pairs, their tree, the actions'
parameter specs, and what several actions share (filters, pages, tags)."""

import base64
import re
import urllib.parse

from .errors import EC2Error


def parse_query_pairs(text):
    """Strict application/x-www-form-urlencoded parsing -> list of pairs."""
    if not text:
        return []
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                                       encoding="utf-8", errors="strict")
    except (ValueError, UnicodeDecodeError) as e:
        raise EC2Error("MalformedQueryString", "The query string is malformed: %s" % e)
    return pairs


def unflatten(pairs):
    """{'A.1.B': v} -> {'A': {'1': {'B': v}}}.  Rejects duplicates/conflicts."""
    root = {}
    for key, value in pairs:
        if not key or any(p == "" for p in key.split(".")):
            raise EC2Error("MalformedQueryString", "Invalid parameter name '%s'" % key)
        parts = key.split(".")
        node = root
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                if p in node:
                    raise EC2Error("InvalidParameterValue",
                                   "Parameter %s appears more than once or conflicts "
                                   "with another parameter" % key)
                node[p] = value
            else:
                nxt = node.setdefault(p, {})
                if not isinstance(nxt, dict):
                    raise EC2Error("InvalidParameterValue",
                                   "Parameter %s conflicts with %s"
                                   % (key, ".".join(parts[:i + 1])))
                node = nxt
    return root


def validate(node, spec, path):
    """Check the unflattened tree against an action spec and convert types.

    spec: str/bool/int markers, [spec] for a list (Name.N), {..} for a struct.
    """
    name = ".".join(path)
    if isinstance(spec, dict):
        if not isinstance(node, dict):
            raise EC2Error("InvalidParameterValue",
                           "Parameter %s must be a structure, not a value" % name)
        out = {}
        for k, v in node.items():
            if k not in spec:
                raise EC2Error("UnknownParameter",
                               "The parameter %s is not recognized" % ".".join(path + [k]))
            out[k] = validate(v, spec[k], path + [k])
        return out
    if isinstance(spec, list):
        if not isinstance(node, dict):
            raise EC2Error("InvalidParameterValue",
                           "Parameter %s is a list: use %s.1, %s.2, ..." % (name, name, name))
        items = []
        for k, v in node.items():
            if not k.isdigit() or int(k) < 1:
                raise EC2Error("UnknownParameter",
                               "The parameter %s is not recognized" % ".".join(path + [k]))
            items.append((int(k), validate(v, spec[0], path + [k])))
        return [v for _, v in sorted(items, key=lambda x: x[0])]
    if isinstance(node, dict):
        first = next(iter(node))
        raise EC2Error("UnknownParameter",
                       "The parameter %s is not recognized" % ".".join(path + [first]))
    if spec is bool:
        low = node.lower()
        if low not in ("true", "false"):
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter %s is invalid. Expected: 'true' or 'false'."
                           % (node, name))
        return low == "true"
    if spec is int:
        try:
            return int(node)
        except ValueError:
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter %s is invalid. Expected an integer."
                           % (node, name))
    return node


TAGS = [{"Key": str, "Value": str}]
TAGSPEC = [{"ResourceType": str, "Tag": TAGS}]
FILTERS = [{"Name": str, "Value": [str]}]
BDM = [{"DeviceName": str, "VirtualName": str, "NoDevice": str,
        "Ebs": {"SnapshotId": str, "VolumeSize": int, "VolumeType": str,
                "DeleteOnTermination": bool, "Iops": int, "Throughput": int,
                "Encrypted": bool, "KmsKeyId": str, "OutpostArn": str}}]

SPECS = {
    "CreateSnapshots": {
        "Description": str, "OutpostArn": str, "TagSpecification": TAGSPEC, "DryRun": bool,
        "CopyTagsFromSource": str,
        "InstanceSpecification": {"InstanceId": str, "ExcludeBootVolume": bool,
                                  "ExcludeDataVolumeId": [str]}},
    "CreateSnapshot": {"Description": str, "OutpostArn": str, "VolumeId": str,
                       "TagSpecification": TAGSPEC, "DryRun": bool},
    "DescribeSnapshots": {"Filter": FILTERS, "MaxResults": int, "NextToken": str,
                          "Owner": [str], "RestorableBy": [str], "SnapshotId": [str],
                          "DryRun": bool},
    "DeleteSnapshot": {"SnapshotId": str, "DryRun": bool},
    "CreateTags": {"ResourceId": [str], "Tag": TAGS, "DryRun": bool},
    "DeleteTags": {"ResourceId": [str], "Tag": TAGS, "DryRun": bool},
    "DescribeTags": {"Filter": FILTERS, "MaxResults": int, "NextToken": str, "DryRun": bool},
    "DescribeInstances": {"Filter": FILTERS, "InstanceId": [str], "MaxResults": int,
                          "NextToken": str, "DryRun": bool},
    "DescribeVolumes": {"Filter": FILTERS, "VolumeId": [str], "MaxResults": int,
                        "NextToken": str, "DryRun": bool},
    "RegisterImage": {"ImageLocation": str, "Architecture": str, "BlockDeviceMapping": BDM,
                      "Description": str, "DryRun": bool, "EnaSupport": bool, "KernelId": str,
                      "Name": str, "BillingProduct": [str], "RamdiskId": str,
                      "RootDeviceName": str, "SriovNetSupport": str,
                      "VirtualizationType": str, "BootMode": str, "TpmSupport": str,
                      "UefiData": str, "ImdsSupport": str, "TagSpecification": TAGSPEC},
    "CreateImage": {"BlockDeviceMapping": BDM, "Description": str, "DryRun": bool,
                    "InstanceId": str, "Name": str, "NoReboot": bool,
                    "TagSpecification": TAGSPEC},
    "DescribeImages": {"ExecutableBy": [str], "Filter": FILTERS, "ImageId": [str],
                       "Owner": [str], "IncludeDeprecated": bool, "DryRun": bool,
                       "MaxResults": int, "NextToken": str},
    "DeregisterImage": {"ImageId": str, "DryRun": bool},
    "CreateVolume": {"AvailabilityZone": str, "AvailabilityZoneId": str, "Encrypted": bool,
                     "Iops": int, "KmsKeyId": str, "OutpostArn": str, "Size": int,
                     "SnapshotId": str, "VolumeType": str, "TagSpecification": TAGSPEC,
                     "MultiAttachEnabled": bool, "Throughput": int, "ClientToken": str,
                     "VolumeInitializationRate": int, "Operator": {"Principal": str},
                     "DryRun": bool},
    "AttachVolume": {"Device": str, "InstanceId": str, "VolumeId": str, "DryRun": bool},
    "DetachVolume": {"Device": str, "Force": bool, "InstanceId": str, "VolumeId": str,
                     "DryRun": bool},
    "DeleteVolume": {"VolumeId": str, "DryRun": bool},
    "RunInstances": {"ImageId": str, "InstanceType": str, "MinCount": int, "MaxCount": int,
                     "SubnetId": str, "SecurityGroupId": [str], "SecurityGroup": [str],
                     "KeyName": str, "TagSpecification": TAGSPEC, "BlockDeviceMapping": BDM,
                     "UserData": str, "DryRun": bool, "ClientToken": str,
                     "Placement": {"AvailabilityZone": str, "Tenancy": str, "GroupName": str},
                     "EbsOptimized": bool, "Monitoring": {"Enabled": bool},
                     "DisableApiTermination": bool, "InstanceInitiatedShutdownBehavior": str,
                     "IamInstanceProfile": {"Arn": str, "Name": str},
                     "MetadataOptions": {"HttpTokens": str, "HttpEndpoint": str,
                                         "HttpPutResponseHopLimit": int},
                     "PrivateIpAddress": str},
    "DescribeInstanceStatus": {"InstanceId": [str], "IncludeAllInstances": bool,
                               "Filter": FILTERS, "MaxResults": int, "NextToken": str,
                               "DryRun": bool},
    "TerminateInstances": {"InstanceId": [str], "DryRun": bool},
    "CopySnapshot": {"SourceRegion": str, "SourceSnapshotId": str, "Description": str,
                     "DestinationRegion": str, "DestinationOutpostArn": str, "Encrypted": bool,
                     "KmsKeyId": str, "PresignedUrl": str, "TagSpecification": TAGSPEC,
                     "CompletionDurationMinutes": int, "DryRun": bool},
    "CopyImage": {"SourceRegion": str, "SourceImageId": str, "Name": str, "Description": str,
                  "Encrypted": bool, "KmsKeyId": str, "CopyImageTags": bool,
                  "TagSpecification": TAGSPEC, "ClientToken": str,
                  "DestinationOutpostArn": str, "SnapshotCopyCompletionDurationMinutes": int,
                  "DryRun": bool},
    "LockSnapshot": {"SnapshotId": str, "LockMode": str, "CoolOffPeriod": int,
                     "LockDuration": int, "ExpirationDate": str, "DryRun": bool},
    "UnlockSnapshot": {"SnapshotId": str, "DryRun": bool},
    "DescribeLockedSnapshots": {"Filter": FILTERS, "MaxResults": int, "NextToken": str,
                                "SnapshotId": [str], "DryRun": bool},
    "ModifySnapshotAttribute": {
        "SnapshotId": str, "Attribute": str, "OperationType": str, "UserId": [str],
        "UserGroup": [str], "DryRun": bool,
        "CreateVolumePermission": {"Add": [{"UserId": str, "Group": str}],
                                   "Remove": [{"UserId": str, "Group": str}]}},
    "DescribeSnapshotAttribute": {"SnapshotId": str, "Attribute": str, "DryRun": bool},
    "ResetSnapshotAttribute": {"SnapshotId": str, "Attribute": str, "DryRun": bool},
    "ModifyImageAttribute": {
        "ImageId": str, "Attribute": str, "OperationType": str, "UserId": [str],
        "UserGroup": [str], "OrganizationArn": [str], "OrganizationalUnitArn": [str],
        "ProductCode": [str], "Value": str, "Description": {"Value": str}, "DryRun": bool,
        "LaunchPermission": {
            "Add": [{"UserId": str, "Group": str, "OrganizationArn": str,
                     "OrganizationalUnitArn": str}],
            "Remove": [{"UserId": str, "Group": str, "OrganizationArn": str,
                        "OrganizationalUnitArn": str}]}},
    "DescribeImageAttribute": {"ImageId": str, "Attribute": str, "DryRun": bool},
}
SPECS["DeregisterImage"]["DeleteAssociatedSnapshots"] = bool


def _wildcard(pattern):
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.S)


def _fval(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def apply_filters(items, filters, table, tags_of):
    """EC2 filters: AND across filters, OR across values, * and ? wildcards."""
    for f in filters or []:
        name = f.get("Name")
        values = f.get("Value") or []
        if not name:
            raise EC2Error("InvalidParameterValue", "The filter name must not be empty")
        if name.startswith("tag:"):
            key = name[4:]
            getter = (lambda it, key=key: [tags_of(it)[key]] if key in tags_of(it) else [])
        elif name == "tag-key":
            getter = lambda it: list(tags_of(it).keys())
        elif name == "tag-value":
            getter = lambda it: list(tags_of(it).values())
        elif name in table:
            getter = table[name]
        else:
            raise EC2Error("InvalidParameterValue", "The filter '%s' is invalid" % name)
        pats = [_wildcard(v) for v in values]
        items = [it for it in items
                 if any(p.match(_fval(v)) for v in getter(it) for p in pats)]
    return items


def paginate(items, params, lo=5, hi=1000):
    max_results = params.get("MaxResults")
    token = params.get("NextToken")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode())
            if start < 0:
                raise ValueError
        except Exception:
            raise EC2Error("InvalidParameterValue", "Invalid value for NextToken")
    if max_results is None:
        return items[start:], None
    if not lo <= max_results <= hi:
        raise EC2Error("InvalidParameterValue",
                       "Value ( %d ) for parameter maxResults is invalid. Expect a number "
                       "between %d and %d." % (max_results, lo, hi))
    page = items[start:start + max_results]
    nxt = None
    if start + max_results < len(items):
        nxt = base64.urlsafe_b64encode(str(start + max_results).encode()).decode()
    return page, nxt


def validate_tags(tags, what="resource"):
    out = {}
    for t in tags:
        key = t.get("Key")
        if key is None or key == "":
            raise EC2Error("InvalidParameterValue", "Tag key must not be empty")
        if len(key) > 128:
            raise EC2Error("InvalidParameterValue",
                           "Tag key exceeds the maximum length of 128 characters")
        if key.lower().startswith("aws:"):
            raise EC2Error("InvalidParameterValue",
                           "Tag keys starting with 'aws:' are reserved for internal use")
        value = t.get("Value", "")
        if len(value) > 256:
            raise EC2Error("InvalidParameterValue",
                           "Tag value exceeds the maximum length of 256 characters")
        out[key] = value
    if len(out) > 50:
        raise EC2Error("TagLimitExceeded",
                       "The maximum number of tags per %s is 50" % what)
    return out


def tags_from_spec(tag_specs, allowed):
    """TagSpecification.N -> {resource_type: {k: v}}."""
    result = {}
    for spec in tag_specs or []:
        rtype = spec.get("ResourceType")
        if rtype is None:
            raise EC2Error("InvalidParameterValue",
                           "TagSpecification.ResourceType is required")
        if rtype not in allowed:
            raise EC2Error("InvalidParameterValue",
                           "'%s' is not a valid taggable resource type for this operation."
                           % rtype)
        tags = validate_tags(spec.get("Tag") or [])
        result.setdefault(rtype, {}).update(tags)
    return result
