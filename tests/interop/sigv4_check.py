"""Checks a SigV4 signature the gateway sent against botocore's own signer (the AWS SDK for
Python's), on the same request: method, URL, headers, body and timestamp.

Usage: sigv4_check.py REQUEST.json, where the file holds url, body, amz_date, authorization,
security_token (or null), region, service, access_key, secret_key, token (or null).
"""
import datetime
import json
import sys

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

r = json.load(open(sys.argv[1]))
when = datetime.datetime.strptime(r["amz_date"], "%Y%m%dT%H%M%SZ")
botocore.auth.get_current_datetime = lambda *a, **k: when

req = AWSRequest(method="POST", url=r["url"], data=r["body"].encode(), headers={"Content-Type": "application/json"})
SigV4Auth(Credentials(r["access_key"], r["secret_key"], r["token"]), r["service"], r["region"]).add_auth(req)
expected = req.headers["Authorization"]
assert r["authorization"] == expected, f"gateway: {r['authorization']}\nbotocore: {expected}"
assert r["security_token"] == req.headers.get("X-Amz-Security-Token"), (r["security_token"], req.headers.get("X-Amz-Security-Token"))
assert req.headers["X-Amz-Date"] == r["amz_date"]
print("sigv4 interop: ok")
