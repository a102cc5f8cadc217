"""Which `splice-amulet` version a package id is, and the rules that version applies.

Events name their package by id, not version; the ids of the published versions come from
Splice's `daml/dars.lock` (public facts, listed here). A package id not listed (a newer release,
a private build) is read with the newest rules and counted as unknown, so `scanfill rounds` can
say how much of the history it read without knowing the version.
"""

from __future__ import annotations

AMULET_PACKAGES: dict[str, str] = {
    "48cac5ba4b6bf78df6c3a952ce05409a1d2ef39c05351074679adc0cf9cd1351": "0.1.0",
    "67bc95402ad7b08fcdff0ed478308d39c70baca2238c35c5d425a435a8a9e7f7": "0.1.1",
    "1446ffdf23326cef2de97923df96618eb615792bea36cf1431f03639448f1645": "0.1.2",
    "0d89016d5a90eb8bced48bbac99e81c57781b3a36094b8d48b8e4389851e19af": "0.1.3",
    "a36ef8888fb44caae13d96341ce1fabd84fc9e2e7b209bbc3caabb48b6be1668": "0.1.4",
    "b4867a47abbfa2d15482f22c9c50516f0af14036287f299342f5d336391e4997": "0.1.5",
    "979ec710c3ae3a05cb44edf8461a9b4d7dd2053add95664f94fc89e5f18df80f": "0.1.6",
    "4646d50cbdec6f088c98ae543da5c973d2d1be3363b9f32eb097d8fdc063ade7": "0.1.7",
    "511bd3bf23fab4e5171edb22dceabe3061f7faf78a44f8af44f3b87f977c61f6": "0.1.8",
    "a5b055492fb8f08b2e7bc0fc94da6da50c39c2e1d7f24cd5ea8db12fc87c1332": "0.1.9",
    "17e51d96dbe9e41e7e5f621861419905206c12aeef77956c0a0da14714c1fa62": "0.1.10",
    "9824927cdb455f833867b74c01cffcd8cb8cc5edd4d2273cea1329b708ef3ce5": "0.1.11",
    "95a88ff9ffd509e097802ecf3bbd58c83a5dff408e439cca4e2105ebd2cd0760": "0.1.12",
    "6e9fc50fb94e56751b49f09ba2dc84da53a9d7cff08115ebb4f6b7a12d0c990c": "0.1.13",
    "3ca1343ab26b453d38c8adb70dca5f1ead8440c42b59b68f070786955cbf9ec1": "0.1.14",
    "67fac2f853bce8dbf0b9817bb5ba7c59f10e8120b7c808696f7010e5f0c8a791": "0.1.15",
    "c208d7ead1e4e9b610fc2054d0bf00716144ad444011bce0b02dcd6cd0cb8a23": "0.1.16",
    "6c5802f86709a0ad4784af81f0bab40f3070b2f58128d8843da1e1784c147802": "0.1.17",
    "a31be0483f3175647053f28965a4e6d97e3dbc433ea2338be303fae69bbcff6a": "0.1.18",
    "90987abecbcb1d004b063ddfe3b4b5d46cf3814ce89114a86c8cd75ff3cb8a4b": "0.1.19",
    "23f47481dab6b1ec01339d6e14494d85bb2844c25f45b26fc5c9ef4cd4942d1f": "0.1.20",
    "73e9ffdb6b0bc19a5f67372b118103926da11547ab9109eccae47e4e4cc35d6f": "0.1.21",
    "fb10433a48c24f30076a7aee03a3e314b7ab02fe9a22e2069e3af92d2b6ac88a": "0.1.22",
    "70d3c970e69b2996eabfa235a6d34822a05f93887dd1b0080cc649a3574a7c07": "0.1.23",
}
PACKAGE_OF = {v: k for k, v in AMULET_PACKAGES.items()}
# splice-dso-governance releases that shipped with each amulet version (Splice's release notes; 0.1.21's
# from its daml.yaml), ids from daml/dars.lock
DSO_PACKAGES: dict[str, str] = {
    "0.1.18": "136484875714fcf24c24858e1d573ac756524eeb607c26999fca3311d6eea953",
    "0.1.19": "759d1cf002fc1225ac43a55d73f0058becce3e62cfb5485c197f2b69ed8d9d98",
    "0.1.23": "0c94a036ac5168a1dee26b435838e062f0d2f47d6eac49303978228ae559edb9",
    "0.1.27": "014473d35514cb36583bdeca269386e46ae4e2283fe9b04beb2f53cdb408e1a2",
}
DSO_WITH_AMULET = {"0.1.13": "0.1.18", "0.1.14": "0.1.19", "0.1.17": "0.1.23", "0.1.21": "0.1.27"}


def version_of(template_id: str | None) -> str | None:
    """The `splice-amulet` version of an event's template id, None when the package is not a known one."""
    if not template_id:
        return None
    return AMULET_PACKAGES.get(template_id.split(":", 1)[0])


def minor(version: str | None) -> int:
    """0.1.N -> N; an unknown version reads as the newest rules."""
    if version is None:
        return 1 << 30
    try:
        return int(version.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return 1 << 30


def deducts_holding_fees(version: str | None) -> bool:
    """Up to 0.1.13 a transfer charged its input amulets' accrued holding fees (burnt)."""
    return minor(version) <= 13


def allows_fees(version: str | None) -> bool:
    """From 0.1.17 (CIP-0107) a transfer's fees must be zero."""
    return minor(version) < 17
