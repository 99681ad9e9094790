"""Pretrained image backbones through timm and the Hugging Face Hub (`model.backbone`).

A name goes to timm when it says so (`hf-hub:ORG/NAME[@REVISION]`, `local-dir:PATH`, `timm:NAME`) or when it is
neither one of emlc's networks nor a torchvision model but timm's registry knows it (`convnext_tiny.fb_in22k`,
`vit_small_patch14_dinov2.lvd142m`). Weights come from a folder (`local-dir:`, config.json + model.safetensors
as `timm.models.save_for_hf` writes them) or through huggingface_hub's cache (HF_HOME / HF_HUB_CACHE,
HF_HUB_OFFLINE=1, HF_TOKEN for gated models): the files are located (downloaded once, with huggingface_hub's
progress bar) before the network is built, so that a missing or refused model is one line naming it, and the
weights have an identity (the Hub commit, or the file's hash) that keys the embedding store.

`check_name` is torch-free (recipes call it); everything else imports timm when called."""
from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emlc_cli.models.backbones import BACKBONES, TIMM_PREFIXES
from emlc_cli.errors import DataError, RecipeError
from emlc_cli.jsonfile import read_json_file

PREFIXES = TIMM_PREFIXES
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
REPO = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?")
REGISTRY_NAME = re.compile(r"[A-Za-z0-9][\w.\-]*")
KEY = "model.backbone"
LOCAL_HINT = "or save it once with timm.models.save_for_hf(model, DIR, safe_serialization=True) and name local-dir:DIR"


def _timm() -> Any:
    """timm, imported on first use; older releases warn about torch.jit APIs at import, which is not the user's
    business (an error is one line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import timm
        import timm.data
        import timm.models
    return timm


def says_timm(name: str) -> bool:
    """The name asks for timm whatever else it might match."""
    return name.startswith(PREFIXES)


VIEWS = "+"  # model.backbone=A+B: frozen backbones whose embeddings are concatenated


def views(name: str) -> list[str]:
    """The backbones a `model.backbone` value names (several joined by '+', each embedding concatenated)."""
    return name.split(VIEWS)


def check_name(name: str, source: str | None = None) -> None:
    """The name's syntax, without importing timm (whether the model exists is answered when it is loaded)."""
    problem = None
    if name.startswith("hf-hub:") and not REPO.fullmatch(name[len("hf-hub:"):]):
        problem = f"'{name[:80]}' must look like hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION"
    elif name.startswith("local-dir:") and not name[len("local-dir:"):].strip():
        problem = "local-dir: needs a folder (local-dir:PATH, holding config.json and model.safetensors)"
    elif not name.startswith(("hf-hub:", "local-dir:")) and not REGISTRY_NAME.fullmatch(name.removeprefix("timm:")):
        problem = f"'{name[:80]}' is not a model name (letters, digits, _ . -; or hf-hub:ORG/NAME, local-dir:PATH)"
    if problem:
        raise RecipeError(problem, key=KEY, source=source)


def is_timm_model(name: str) -> bool:
    """Named for timm, or neither emlc's nor torchvision's but known to timm's registry (a pretrained tag like
    `.lvd142m` included): emlc's table and torchvision names keep their meaning."""
    if says_timm(name):
        return True
    if name in BACKBONES:
        return False
    timm = _timm()
    import torchvision

    return name not in torchvision.models.list_models(module=torchvision.models) and timm.is_model(name)


@dataclass(frozen=True)
class Located:
    """Where a timm backbone's architecture and weights are: what timm.create_model gets, and their identity."""

    name: str
    architecture: str                     # timm's architecture, to rebuild the network offline from a run folder
    model_args: dict[str, Any] = field(default_factory=dict)
    weights_file: str | None = None       # a local safetensors file (None: random init, or timm downloads a URL)
    digest: str = ""                      # the Hub commit or the file's sha256: what the weights are
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)


def locate(name: str, weights: str = "pretrained") -> Located:
    """Find (and download once, from the Hub) the model's files; every failure is one RecipeError line. Not
    memoised: a folder saved again gets its new digest (the file hash itself is memoised on size and mtime)."""
    if name.startswith("local-dir:"):
        return _from_folder(name, Path(name[len("local-dir:"):]).expanduser(), weights)
    if name.startswith("hf-hub:"):
        repo, _, revision = name[len("hf-hub:"):].partition("@")
        config = _hub_file(name, repo, CONFIG_FILE, revision or None)
        return _from_folder(name, config.parent, weights, digest=_commit_of(config))
    return _from_registry(name[len("timm:"):] if name.startswith("timm:") else name, name, weights)


def _from_folder(name: str, folder: Path, weights: str, digest: str = "") -> Located:
    config = _read_config(name, folder / CONFIG_FILE)
    file = folder / WEIGHTS_FILE
    if weights == "pretrained" and name.startswith("hf-hub:") and not file.is_file():
        repo, _, revision = name[len("hf-hub:"):].partition("@")
        file = _hub_file(name, repo, WEIGHTS_FILE, revision or None)
    if weights == "pretrained" and not file.is_file():
        raise RecipeError(f"{name}: {folder} has no {WEIGHTS_FILE}; {LOCAL_HINT}", key=KEY)
    cfg = dict(config.get("pretrained_cfg") or {})
    found = str(file) if weights == "pretrained" else None
    return Located(name, config["architecture"], dict(config.get("model_args") or {}), found,
                   (digest or file_digest(file)) if found else "", cfg)


def _read_config(name: str, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{name}: {path} not found (a timm model folder holds {CONFIG_FILE} and {WEIGHTS_FILE}); "
                          f"{LOCAL_HINT}", key=KEY)
    try:
        config = read_json_file(path, "is not readable JSON")
    except DataError as err:  # the recipe named this folder: the error names the key
        raise RecipeError(f"{name}: {err}", key=KEY) from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise RecipeError(f"{name}: {path} names no 'architecture' (not a timm model config)", key=KEY)
    if not isinstance(config.get("model_args") or {}, dict) or not isinstance(config.get("pretrained_cfg") or {}, dict):
        raise RecipeError(f"{name}: {path}: 'model_args' and 'pretrained_cfg' must be mappings", key=KEY)
    return config


def check_known(name: str) -> None:
    """A registry name timm knows (nothing is looked for on the Hub); other forms are checked by locate."""
    timm = _timm()
    bare = name.removeprefix("timm:")
    if not says_timm(name) or name.startswith("timm:"):
        if not timm.is_model(bare):
            raise RecipeError(f"unknown backbone '{name[:80]}'{_close(bare)}: not an emlc, torchvision or timm model name",
                              key=KEY)


def _from_registry(bare: str, name: str, weights: str) -> Located:
    timm = _timm()
    check_known(name)
    architecture = bare.split(".")[0]
    if weights != "pretrained":
        return Located(name, architecture)
    cfg = timm.models.get_pretrained_cfg(bare)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise RecipeError(f"timm has no pretrained weights for '{bare}'; name one with a pretrained tag "
                          f"(timm.list_pretrained('{architecture}*'))", key=KEY)
    if not cfg.hf_hub_id:  # weights only at a URL: timm downloads them into torch's hub cache
        return Located(name, architecture, digest=f"url:{cfg.url}", pretrained_cfg=cfg.to_dict())
    file = _hub_file(name, cfg.hf_hub_id, cfg.hf_hub_filename or WEIGHTS_FILE, None)
    return Located(name, architecture, {}, str(file), _commit_of(file) or file_digest(file), cfg.to_dict())


def _close(word: str) -> str:
    import difflib

    timm = _timm()
    close = difflib.get_close_matches(word, timm.list_models(pretrained=True) + timm.list_models(), n=3)
    return f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""


def _hub_file(name: str, repo: str, filename: str, revision: str | None) -> Path:
    """A file of a Hub model, from huggingface_hub's cache or downloaded into it; the token is never shown."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, library_name="emlc", local_files_only=_no_hub()))
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise RecipeError(f"{name}: {filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {how}; "
                          f"download it once with network (run the same command online), {LOCAL_HINT}", key=KEY) from None
    except GatedRepoError:
        raise RecipeError(f"{name}: access refused by the Hub (gated or private model): accept its terms on "
                          "huggingface.co and set HF_TOKEN to a token that may read it", key=KEY) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:
        raise RecipeError(f"{name}: not found on the Hub ({type(err).__name__}); check ORG/NAME, the revision, and "
                          "HF_TOKEN for a private model", key=KEY) from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        raise RecipeError(f"{name}: the Hub refused the download (HTTP {status}); for a gated or private model set "
                          "HF_TOKEN to a token that may read it", key=KEY) from None
    except OSError as err:  # the cache folder unwritable, a disk full
        raise RecipeError(f"{name}: cannot write the Hugging Face cache ({type(err).__name__}: {str(err)[:120]})",
                          key=KEY) from None


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _no_hub() -> bool:
    """True when the Hub's host name does not resolve: no network. huggingface_hub would then retry its request
    five times (about 23 s, with a warning each time) before falling back to its cache, on every run, and it has
    no setting for that short of HF_HUB_OFFLINE. Behind a proxy the proxy resolves names, so nothing is judged."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in PROXY_VARIABLES):
        return False
    host = urllib.parse.urlsplit(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return True
    return False


def _commit_of(path: Path) -> str:
    """The Hub commit a cached file belongs to (.../snapshots/<commit>/file), '' elsewhere."""
    return f"hub:{path.parent.name}" if path.parent.parent.name == "snapshots" else ""


def file_digest(path: Path) -> str:
    """sha256 of a weights file, memoised on its size and modification time."""
    stat = path.stat()
    return _hashed(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _hashed(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        return f"sha256:{hashlib.file_digest(handle, 'sha256').hexdigest()}"


def model_kwargs(located: Located, size: int = 0) -> dict[str, Any]:
    """create_model's arguments besides the name: config.json's model_args without the classifier's (the
    features are taken before it), and img_size for a network whose position embeddings are fixed to its
    input (ViTs: timm resamples them from the pretrained size). Convolutional networks take any size as it is."""
    kwargs = {k: v for k, v in located.model_args.items() if k not in ("num_classes", "pretrained_cfg", "pretrained_cfg_overlay")}
    fixed = located.pretrained_cfg.get("fixed_input_size") or "img_size" in located.model_args
    return {**kwargs, "img_size": size} if size and fixed else kwargs


def data_config(located: Located) -> dict[str, Any]:
    """timm's resolved data config from the model's pretrained config, without building the network (what
    resolve_model_data_config gives for the built one)."""
    timm = _timm()
    return timm.data.resolve_data_config({}, pretrained_cfg=located.pretrained_cfg or None, use_test_size=False)


def build(located: Located, size: int = 0) -> tuple[Any, dict[str, Any]]:
    """The network without its classifier (num_classes=0: pooled features) and timm's data config for it."""
    timm = _timm()
    kwargs = model_kwargs(located, size)
    overlay = {"file": located.weights_file} if located.weights_file else None
    try:
        net = timm.create_model(located.architecture, pretrained=overlay is not None or located.digest.startswith("url:"),
                                num_classes=0, pretrained_cfg=located.pretrained_cfg or None,
                                pretrained_cfg_overlay=overlay, **kwargs)
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise RecipeError(f"{located.name}: cannot build it with timm ({type(err).__name__}: {first})", key=KEY) from None
    return net, timm.data.resolve_model_data_config(net)


def rebuild(architecture: str, kwargs: dict[str, Any]) -> Any:
    """The network of a run folder's frozen backbone, weights to be loaded from the run (no download)."""
    timm = _timm()
    return timm.create_model(architecture, pretrained=False, num_classes=0, **kwargs)
