"""Hostile inputs on the Python API (issue 30): every failure is an EmlcError subclass with one line naming the
user's object and row (never an Arrow, numpy or pandas exception, never emlc's temporary files), and a call that
succeeds prints nothing (datasets' progress bars included) and leaves the user's progress-bar setting as it was."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import emlc_cli
from emlc_cli.cli.app import app
from emlc_cli.errors import EmlcError
from tests.conftest import CLASSES, COLOURS, TINY, make_image

runner = CliRunner()
FAST = ["train.epochs=2", "meta.warmup_epochs=1", "train.batch_size=16", "train.clean_batch_size=8"]


def features(n: int = 60) -> tuple[np.ndarray, list[str]]:
    """Three well-separated classes of 3-d feature vectors, and their names."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    return (np.eye(3)[y] + rng.normal(0, 0.1, (n, 3))).astype(np.float32), [CLASSES[i] for i in y]


X, NAMES = features()
VERIFIED = {i: NAMES[i] for i in range(0, len(NAMES), 5)}


def with_label(position: int, value: object) -> list[object]:
    labels: list[object] = list(NAMES)
    labels[position] = value
    return labels


CASES = {  # name: (data, verified, labels, columns, fragments of the one line)
    "mixed_label_column": (pd.DataFrame({"f": list(X), "label": with_label(7, 1)}), VERIFIED, None,
                           {"feature_column": "f"}, ("data['label'][7]", "another type")),
    "label_above_2_64_in_a_frame": (pd.DataFrame({"f": list(X), "label": [2 ** 65] + list(range(59))}), VERIFIED,
                                    None, {"feature_column": "f"}, ("data['label'][0]", "64-bit")),
    "label_above_2_64": (X, VERIFIED, np.array([2 ** 65] + list(range(59)), dtype=object), {}, ("labels[0]", "64-bit")),
    "string_in_feature_array": (np.array([[1.0, 2.0, 3.0]] * 4 + [[1.0, "x", 3.0]] * 56, dtype=object), VERIFIED,
                                NAMES, {}, ("data[4]", "could not convert string to float")),
    "one_column_verified_frame": (X, pd.DataFrame({"id": ["0", "5"]}), NAMES, {}, ("verified", "two columns", "has 1")),
    "nan_in_labels": (X, VERIFIED, with_label(17, float("nan")), {}, ("labels[17]: NaN is not a label",)),
    "nan_in_a_frame's_labels": (pd.DataFrame({"f": list(X), "label": with_label(3, np.nan)}), VERIFIED, None,
                                {"feature_column": "f"}, ("data['label'][3]: NaN is not a label",)),
    "none_in_verified": (X, {**VERIFIED, 5: None}, NAMES, {}, ("verified[5]: a missing value",)),
    "labels_as_one_string": (X, VERIFIED, "abc" * 20, {}, ("labels: expected one class name or int per row",)),
    "verified_label_not_a_class": (X, {**VERIFIED, 5: "purple"}, NAMES, {}, ("verified['5']", "'purple' is not a class")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_in_memory_input_is_one_emlc_error_naming_the_users_object(name):
    data, verified, labels, columns, fragments = CASES[name]
    with pytest.raises(EmlcError) as caught:
        emlc_cli.clean(data, verified, labels=labels, recipe="features", overrides=FAST, device="cpu", **columns)
    message = str(caught.value)
    assert "\n" not in message and all(part in message for part in fragments), message
    assert "emlc-api-" not in message and ".csv" not in message, message


@pytest.mark.parametrize("enabled", [True, False], ids=["bars_on", "bars_off"])
def test_a_successful_call_prints_nothing_and_keeps_the_progress_bar_setting(capfd, enabled):
    import datasets

    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        frame = pd.DataFrame({"f": list(X), "label": NAMES})
        run = emlc_cli.clean(frame, VERIFIED, recipe="features", feature_column="f", overrides=FAST, device="cpu")
        printed = capfd.readouterr()
        assert len(run.rows) == len(X)
        assert (printed.out, printed.err) == ("", "")
        assert datasets.is_progress_bar_enabled() is enabled
    finally:
        datasets.enable_progress_bars()


def test_predict_says_which_rows_it_left_out(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    emlc_cli.clean(noisy_folder["root"], noisy_folder["clean"], overrides=TINY, out=out, device="cpu")
    new = noisy_folder["tmp"] / "new"
    new.mkdir()
    rng = np.random.default_rng(5)
    for i, name in enumerate(CLASSES * 2):
        make_image(COLOURS[name], rng).save(new / f"{i:02d}_{name}.png")
    (new / "03_torn.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    predicted = emlc_cli.predict(out, new, device="cpu")
    assert len(predicted.keys) == 6 and [key for key, _ in predicted.left_out] == ["03_torn.png"]
    result = runner.invoke(app, ["predict", str(out), str(new), "--out", str(noisy_folder["tmp"] / "p.csv"), "--quiet"])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "1 unreadable rows left out" in warned[0] and "03_torn.png" in warned[0], result.output


def test_predict_ignores_the_labels_it_is_given_nan_included(tmp_path):
    """predict reads no label: a NaN among labels it is handed anyway is no reason to refuse."""
    emlc_cli.clean(X, VERIFIED, labels=NAMES, recipe="features", overrides=FAST, device="cpu", out=tmp_path / "run")
    from_array = emlc_cli.predict(tmp_path / "run", X, labels=with_label(3, float("nan")), device="cpu")
    frame = pd.DataFrame({"f": list(X), "label": with_label(3, np.nan)})
    from_frame = emlc_cli.predict(tmp_path / "run", frame, feature_column="f", device="cpu")
    assert from_array.labels == from_frame.labels and len(from_frame.keys) == len(X)
