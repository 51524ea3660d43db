# Verifies every DKIM-Signature of the message on stdin with dkimpy (Debian's python3-dkim), an
# implementation independent of the Node code under test. Key records come only from the JSON
# object in LACRE_DKIMPY_RECORDS (DNS name -> TXT value); nothing is looked up on the network.
# Prints a JSON array: one {domain, selector, ok, error} per signature, in header order.
import json
import os
import sys

import dkim
from dkim.util import parse_tag_value


def main():
    records = {k.rstrip('.').lower(): v for k, v in json.loads(os.environ['LACRE_DKIMPY_RECORDS']).items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode('ascii')
        value = records.get(name.rstrip('.').lower())
        return value.encode('utf-8') if value is not None else None

    message = sys.stdin.buffer.read()
    verifier = dkim.DKIM(message)
    signatures = [value for (name, value) in verifier.headers if name.lower() == b'dkim-signature']
    results = []
    for idx, value in enumerate(signatures):
        domain = selector = ''
        try:
            tags = parse_tag_value(value)
            domain = tags.get(b'd', b'').decode('ascii', 'replace')
            selector = tags.get(b's', b'').decode('ascii', 'replace')
        except Exception:
            pass
        error = None
        try:
            ok = bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException as err:
            ok = False
            error = str(err)
        results.append({'domain': domain, 'selector': selector, 'ok': ok, 'error': error})
    json.dump(results, sys.stdout)


if __name__ == '__main__':
    main()
