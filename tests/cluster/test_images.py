"""The images users run (and the hub and proxy stand-ins the JupyterHub install runs) hold nothing of the machine that built them: not its own CAs (the egress
proxy's, which pip needed during the build and got only as a build secret), no host paths or
proxy settings in the image config, no build secrets left in a layer."""
import base64
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from jupyter_scheduler_k8s import __version__

OUT = Path(os.environ.get("JSK8S_CACHE_DIR", "/var/cache/jupyter-scheduler-k8s")) / "images" / "out"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
HOST_PATHS = (b"/work/", b"/var/cache/jupyter-scheduler-k8s", b"/var/lib/jupyter-scheduler-k8s", b"/usr/local/share/ca-certificates")


ROOT = Path(__file__).resolve().parents[2]


def _tag(target):
    if target == "executor":
        return re.search(r'^version = "(.*)"', (ROOT / "image" / "executor" / "pyproject.toml").read_text(), re.M)[1]
    if target in ("hub", "proxy"):
        name = {"hub": "Z2JH_VERSION", "proxy": "CHP_VERSION"}[target]
        return re.search(rf"^{name}=(\S+)", (ROOT / "ci" / "image" / "env.sh").read_text(), re.M)[1]
    return __version__


def _tarball(target):
    path = OUT / f"jupyter-scheduler-k8s-{target}-{_tag(target)}.tar"
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} was not built (ci/image/build {target})")
        pytest.skip(f"{path} was not built (ci/image/build {target})")
    return path


def _local_ca_fingerprints():
    """A line from the middle of each of this machine's own CA certificates, as PEM text and as the
    48 DER bytes it encodes (which a DER copy holds verbatim: PEM lines are 48-byte aligned)."""
    found = []
    for crt in sorted(LOCAL_CAS.glob("*.crt")):
        body = [line for line in crt.read_text().splitlines() if line and "CERTIFICATE" not in line]
        if len(body) > 4:
            line = body[len(body) // 2].encode()
            found.append((line, base64.b64decode(line)))
    return found


def _files(image: tarfile.TarFile):
    """(layer, path, content) of every regular file in every layer of a docker-archive."""
    manifest = json.load(image.extractfile("manifest.json"))[0]
    for layer in manifest["Layers"]:
        with tarfile.open(fileobj=image.extractfile(layer)) as files:
            for member in files:
                if member.isfile():
                    yield layer, member.name, files.extractfile(member).read()


@pytest.mark.parametrize("target", ["executor", "gateway", "user", "hub", "proxy"])
def test_image_holds_nothing_of_this_machine(target):
    fingerprints = _local_ca_fingerprints()
    # The build's bundle (ci/image/env.sh PIP_CA) holds these: with none to look for, the check
    # below could not fail.
    assert fingerprints, f"no CA certificate of this machine's own in {LOCAL_CAS}: nothing to look for"
    with tarfile.open(_tarball(target)) as image:
        manifest = json.load(image.extractfile("manifest.json"))[0]
        config = image.extractfile(manifest["Config"]).read()
        for needle in HOST_PATHS:
            assert needle not in config, f"{target} image config (or its history) mentions {needle!r}"
        env = {line.split("=", 1)[0] for line in json.loads(config)["config"].get("Env", [])}
        assert not env & {"PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY",
                          "http_proxy", "https_proxy"}, env
        seen = 0
        for layer, path, content in _files(image):
            seen += 1
            assert not path.lstrip("./").startswith(("run/secrets/", "usr/local/share/ca-certificates/")), path
            for pem_line, der in fingerprints:
                assert pem_line not in content and der not in content, \
                    f"{target}: {path} (layer {layer}) holds a CA of this machine"
        assert seen > 1000, "the layers were not read"
