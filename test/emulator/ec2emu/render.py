"""EC2's XML: the response document of an action and the error document."""

from xml.sax.saxutils import escape as _xml_escape

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def error_xml(code, message, request_id):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            "<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors>"
            "<RequestID>%s</RequestID></Response>"
            % (_xml_escape(code), _xml_escape(message), _xml_escape(request_id)))


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return _xml_escape(str(v))


def _render(name, value, depth, out):
    """Render one member; dict -> structure, list -> <name><item>..</item></name>."""
    if value is None:
        return
    pad = "    " * depth
    if isinstance(value, dict):
        if not value:
            out.append("%s<%s/>" % (pad, name))
            return
        out.append("%s<%s>" % (pad, name))
        for k, v in value.items():
            _render(k, v, depth + 1, out)
        out.append("%s</%s>" % (pad, name))
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("%s<%s/>" % (pad, name))
            return
        out.append("%s<%s>" % (pad, name))
        for item in value:
            if isinstance(item, dict):
                _render("item", item, depth + 1, out)
            else:
                out.append("%s    <item>%s</item>" % (pad, _scalar(item)))
        out.append("%s</%s>" % (pad, name))
    else:
        out.append("%s<%s>%s</%s>" % (pad, name, _scalar(value), name))


def response_xml(action, members, request_id):
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<%sResponse xmlns="%s">' % (action, EC2_NS),
           "    <requestId>%s</requestId>" % request_id]
    for k, v in members.items():
        _render(k, v, 1, out)
    out.append("</%sResponse>" % action)
    return "\n".join(out) + "\n"


def tag_set(tags):
    return [{"key": k, "value": v} for k, v in tags.items()]
