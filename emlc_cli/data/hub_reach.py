"""Fail fast on an unreachable Hugging Face Hub: one probe instead of huggingface_hub's retry loop."""
from __future__ import annotations

from emlc_cli.errors import DataError


def check_hub_reachable(where: str) -> None:
    """One request to the Hub endpoint, no retries: an unreachable endpoint fails now, in one line, instead of
    after ~30 s of huggingface_hub retry warnings (they cannot be turned off). Any HTTP answer counts as
    reachable; offline mode (HF_HUB_OFFLINE=1, reading the local cache) skips the check."""
    import datasets
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if getattr(datasets.config, "HF_HUB_OFFLINE", False) or constants.HF_HUB_OFFLINE:
        return
    endpoint = constants.ENDPOINT
    try:
        get_session().head(endpoint, timeout=float(constants.HF_HUB_ETAG_TIMEOUT))  # works for httpx and requests
    except Exception as err:  # the HTTP client's transport errors (refused, DNS, timeout, TLS, proxy)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise DataError(f"cannot reach the Hugging Face Hub at {endpoint} ({first}); check the network or "
                        "HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to read a dataset already in the local cache", path=where) from None
