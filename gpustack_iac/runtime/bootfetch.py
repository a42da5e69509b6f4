"""The first program a cloud node or gateway runs: fetch the pinned runtime and the tokens.

Standard library only, Python >= 3.8: it runs on a fresh image before anything is installed, from
the boot script (providers/cloudboot.py), which carries it compressed. It reads a JSON config (no
secrets in it) and, with the instance's own identity (AWS: instance-profile credentials through
IMDSv2; GCP: the metadata server's token; Azure: the managed identity's tokens from IMDS), fetches the runtime's manifest and wheels from the
stack's bucket, checks every SHA-256 (the manifest's own digest is in the boot script), refuses
anything that does not match, and installs the wheels into a venv with pypa's `installer` (no pip,
no package index). It also copies named secrets into 0600 files.

    python3 bootfetch.py CONFIG install
    python3 bootfetch.py CONFIG secret NAME FILE
    python3 bootfetch.py CONFIG secrets-under PATH DIR [--every SECONDS]   # PATH, or "NAME=SECRET ..." pairs
    python3 bootfetch.py CONFIG identity FILE     # GPUSTACK_NAME=<instance>, GPUSTACK_ADDRESS=<private IP>

Every failure exits non-zero with one line starting "gpustack boot:", so cloud-init's log names it.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")
# Unpacks the given wheels into the running (venv) interpreter with pypa's installer.
INSTALL = (
    "import sys, sysconfig\n"
    "from installer import install\n"
    "from installer.destinations import SchemeDictionaryDestination\n"
    "from installer.sources import WheelFile\n"
    "dest = SchemeDictionaryDestination(sysconfig.get_paths(), interpreter=sys.executable, script_kind='posix')\n"
    "for path in sys.argv[1:]:\n"
    "    with WheelFile.open(path) as source:\n"
    "        install(source, dest, {'INSTALLER': b'gpustack-iac-boot'})\n")


class BootError(Exception):
    pass


def http(method, url, headers=None, body=None, timeout=20.0):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.read()
    except OSError as exc:  # URLError and HTTPError are OSErrors
        detail = exc.read()[:300].decode("utf-8", "replace") if hasattr(exc, "read") else ""
        raise BootError("%s %s failed: %s %s" % (method, url.split("?")[0], exc, detail)) from exc


def retried(fn, what, tries=6):
    """Metadata and storage endpoints can lag the instance's first seconds: retry with back-off."""
    for attempt in range(tries):
        try:
            return fn()
        except BootError as exc:
            if attempt == tries - 1:
                raise BootError("%s: %s" % (what, exc)) from exc
            time.sleep(min(2 ** attempt, 10))


def _sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(method, url, region, service, creds, body=b"", headers=None, now=None):
    """AWS Signature Version 4 headers for one request (the documented algorithm, no SDK)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    parts = urllib.parse.urlsplit(url)
    payload = hashlib.sha256(body).hexdigest()
    signed = dict((k.lower(), v.strip()) for k, v in (headers or {}).items())
    signed.update({"host": parts.netloc, "x-amz-date": stamp, "x-amz-content-sha256": payload})
    if creds.get("Token"):
        signed["x-amz-security-token"] = creds["Token"]
    names = ";".join(sorted(signed))
    query = "&".join(sorted("%s=%s" % (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    # The path as sent, already URI-encoded by the caller (S3 signs it once-encoded; the other
    # services used here sign "/").
    canonical = "\n".join([method, parts.path or "/", query,
                           "".join("%s:%s\n" % (k, signed[k]) for k in sorted(signed)), names, payload])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(_sign(_sign(_sign(("AWS4" + creds["SecretAccessKey"]).encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        creds["AccessKeyId"], scope, names, signature)
    del signed["host"]
    return signed


class Aws:
    """S3 for the runtime, SSM Parameter Store for tokens, credentials from IMDSv2."""

    def __init__(self, cfg):
        self.cfg, self.region = cfg, cfg["region"]
        self.metadata = cfg["endpoints"]["metadata"]

    def _imds(self, path):
        token = http("PUT", self.metadata + "/latest/api/token",
                     {"X-aws-ec2-metadata-token-ttl-seconds": "300"}).decode()
        return http("GET", self.metadata + "/latest/" + path, {"X-aws-ec2-metadata-token": token}).decode()

    def _creds(self):
        role = self._imds("meta-data/iam/security-credentials/").split()[0]
        return json.loads(self._imds("meta-data/iam/security-credentials/" + role))

    def identity(self):
        return self._imds("meta-data/instance-id").strip(), self._imds("meta-data/local-ipv4").strip()

    def get_object(self, key):
        url = "%s/%s/%s" % (self.cfg["endpoints"]["storage"], self.cfg["bucket"], urllib.parse.quote(key))
        return http("GET", url, sigv4_headers("GET", url, self.region, "s3", self._creds()))

    def _ssm(self, action, request):
        url, body = self.cfg["endpoints"]["secrets"] + "/", json.dumps(request).encode()
        headers = {"content-type": "application/x-amz-json-1.1", "x-amz-target": "AmazonSSM." + action}
        headers = sigv4_headers("POST", url, self.region, "ssm", self._creds(), body, headers)
        return json.loads(http("POST", url, headers, body))

    def secret(self, name):
        return self._ssm("GetParameter", {"Name": name, "WithDecryption": True})["Parameter"]["Value"]

    def secrets_under(self, path):
        found, token = {}, None
        while True:
            request = {"Path": path, "WithDecryption": True, "Recursive": False}
            if token:
                request["NextToken"] = token
            answer = self._ssm("GetParametersByPath", request)
            found.update((p["Name"].rsplit("/", 1)[-1], p["Value"]) for p in answer.get("Parameters", []))
            token = answer.get("NextToken")
            if not token:
                return found


class Gcp:
    """Cloud Storage for the runtime, Secret Manager for tokens, the metadata server's token."""

    def __init__(self, cfg):
        self.cfg, self.metadata = cfg, cfg["endpoints"]["metadata"]

    def _meta(self, path):
        return http("GET", self.metadata + "/computeMetadata/v1/" + path, {"Metadata-Flavor": "Google"}).decode()

    def _auth(self):
        token = json.loads(self._meta("instance/service-accounts/default/token"))["access_token"]
        return {"Authorization": "Bearer " + token}

    def identity(self):
        return self._meta("instance/name").strip(), self._meta("instance/network-interfaces/0/ip").strip()

    def get_object(self, key):
        url = "%s/storage/v1/b/%s/o/%s?alt=media" % (self.cfg["endpoints"]["storage"], self.cfg["bucket"],
                                                     urllib.parse.quote(key, safe=""))
        return http("GET", url, self._auth())

    def secret(self, name):
        url = "%s/v1/projects/%s/secrets/%s/versions/latest:access" % (
            self.cfg["endpoints"]["secrets"], self.cfg["project"], name)
        return base64.b64decode(json.loads(http("GET", url, self._auth()))["payload"]["data"]).decode()

    def secrets_under(self, prefix):
        url = "%s/v1/projects/%s/secrets?filter=%s" % (self.cfg["endpoints"]["secrets"], self.cfg["project"],
                                                       urllib.parse.quote("name:" + prefix))
        names = [s["name"].rsplit("/", 1)[-1] for s in json.loads(http("GET", url, self._auth())).get("secrets", [])]
        return dict((n[len(prefix):], self.secret(n)) for n in names if n.startswith(prefix))


class Azure:
    """Blob Storage for the runtime, Key Vault for tokens, tokens of the managed identity from IMDS.
    A secret is named `VAULT/NAME`; storage and vault URLs come from the config's templates."""

    STORAGE, VAULT = "https://storage.azure.com/", "https://vault.azure.net"

    def __init__(self, cfg):
        self.cfg, self.metadata = cfg, cfg["endpoints"]["metadata"]
        self.storage = cfg["endpoints"]["storage"].replace("{account}", cfg.get("account") or "")

    def _imds(self, path, query):
        url = self.metadata + path + "?" + urllib.parse.urlencode(query)
        return http("GET", url, {"Metadata": "true"}).decode()

    def _auth(self, resource):
        query = {"api-version": "2018-02-01", "resource": resource}
        if self.cfg.get("identity"):
            query["client_id"] = self.cfg["identity"]  # the user-assigned identity the stack made
        token = json.loads(self._imds("/metadata/identity/oauth2/token", query))["access_token"]
        return {"Authorization": "Bearer " + token}

    def identity(self):
        text = {"api-version": "2021-02-01", "format": "text"}
        return (self._imds("/metadata/instance/compute/name", text).strip(),
                self._imds("/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress", text).strip())

    def get_object(self, key):
        url = "%s/%s/%s" % (self.storage, self.cfg["bucket"], urllib.parse.quote(key))
        # Bearer tokens need a service version of 2017-11-09 or later.
        return http("GET", url, dict(self._auth(self.STORAGE), **{"x-ms-version": "2020-10-02"}))

    def secret(self, name):
        vault, _, secret = name.partition("/")
        base = self.cfg["endpoints"]["secrets"].replace("{vault}", vault)
        url = "%s/secrets/%s?api-version=7.4" % (base, urllib.parse.quote(secret))
        return json.loads(http("GET", url, self._auth(self.VAULT)))["value"]

    def secrets_under(self, prefix):
        raise BootError("Azure secrets are read by name: give NAME=VAULT/SECRET pairs")


CLOUDS = {"aws": Aws, "gcp": Gcp, "azure": Azure}


def secrets_named(cloud, spec):
    """`NAME=SECRET NAME=SECRET ...`: each secret read by its own name (an identity that may read
    exactly those, and list nothing); otherwise `spec` is a path or prefix the cloud lists."""
    if "=" not in spec:
        return cloud.secrets_under(spec)
    pairs = [p.partition("=") for p in spec.split()]
    return dict((name, cloud.secret(ref)) for name, _, ref in pairs)


def write_private(path, text):
    """Written aside and renamed, mode 0600: a reader never sees half a token."""
    tmp = path + ".new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _checked(data, expected, what):
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise BootError("%s has sha256 %s, the boot script pins %s: refusing to install it" % (what, digest, expected))
    return data


def install(cfg, cloud):
    want = cfg["python"]
    have = "%d.%d" % sys.version_info[:2]
    if have != want or os.uname().machine != cfg["machine"]:
        raise BootError("this image has Python %s on %s; the runtime was built for Python %s on %s"
                        % (have, os.uname().machine, want, cfg["machine"]))
    prefix = cfg["prefix"].rstrip("/") + "/"
    manifest = json.loads(_checked(retried(lambda: cloud.get_object(prefix + "manifest.json"), "fetching the manifest"),
                                   cfg["manifest_sha256"], "manifest.json"))
    wheels_dir = os.path.join(cfg["root"], "wheels")
    os.makedirs(wheels_dir, exist_ok=True)
    paths = []
    for wheel in manifest["wheels"]:
        if not WHEEL_NAME.match(wheel["name"]):
            raise BootError("the manifest names %r, which is not a wheel file name" % wheel["name"])
        data = retried(lambda name=wheel["name"]: cloud.get_object(prefix + name), "fetching " + wheel["name"])
        path = os.path.join(wheels_dir, wheel["name"])
        with open(path, "wb") as f:
            f.write(_checked(data, wheel["sha256"], wheel["name"]))
        paths.append(path)
    venv = os.path.join(cfg["root"], "runtime")
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", venv], check=True)
    tool = [p for p in paths if os.path.basename(p).startswith("installer-")]
    if not tool:
        raise BootError("the manifest has no installer wheel")
    env = dict(os.environ, PYTHONPATH=tool[0])
    subprocess.run([os.path.join(venv, "bin", "python"), "-c", INSTALL] + paths, check=True, env=env)
    print("gpustack boot: installed %d wheels of %s into %s" % (len(paths), manifest["version"], venv))


def main(argv):
    cfg = json.load(open(argv[0]))
    cloud = CLOUDS[cfg["cloud"]](cfg)
    command, rest = argv[1], argv[2:]
    if command == "install":
        install(cfg, cloud)
    elif command == "secret":
        write_private(rest[1], retried(lambda: cloud.secret(rest[0]), "reading secret " + rest[0]))
    elif command == "identity":
        name, address = retried(cloud.identity, "reading the instance's identity")
        write_private(rest[0], "GPUSTACK_NAME=%s\nGPUSTACK_ADDRESS=%s\n" % (name, address))
    elif command == "secrets-under":
        every = float(rest[3]) if len(rest) > 3 and rest[2] == "--every" else 0
        while True:
            for name, value in retried(lambda: secrets_named(cloud, rest[0]), "reading " + rest[0]).items():
                if re.match(r"^[A-Za-z0-9_.-]+$", name):
                    write_private(os.path.join(rest[1], name + ".token"), value)
            if not every:
                return
            time.sleep(every)
    else:
        raise BootError("unknown command " + command)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (BootError, subprocess.CalledProcessError, OSError, KeyError, ValueError) as exc:
        sys.stderr.write("gpustack boot: %s\n" % exc)
        sys.exit(1)
