"""Agreement across scans (`run --agree K`): a page is used only when K scans returned the same
content for the same request, as Splice's own scan-to-scan backfill requires f+1 equal answers.

Pages are compared by a canonical digest of their items (update id, record time, and the item's
content with keys sorted: not field order or whitespace), computed only when the pages' bytes
differ: honest scans serve byte-identical V1 pages, and equal bytes are equal content. Only the
agreed body goes on to be decoded and stored; the others are only hashed. Requests go to scans reporting a complete history
for the migration, so every compared scan covers the same window (the `at_or_after` rule of
Splice's BftScanConnection holds because the slice's lower bound comes from such a scan).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import orjson

from scanfill.errors import ConfigError, MalformedPage, ScanError, ScanHTTPError

ASKS_PER_SCAN = 3  # a scan that answers 503 (its own timeout, or a blip) is asked again this often


class NoAgreement(ScanError):
    """Fewer than K scans returned the same page: nothing of it is stored."""

    transient = False


@dataclass(frozen=True)
class Disagreement:
    url: str
    request: str
    differing_ids: tuple[str, ...]  # updates the scan served differently, or omitted, or added


@dataclass
class Agreed:
    body: bytes
    urls: list[str]  # the scans that agreed
    disagreements: list[Disagreement] = field(default_factory=list)
    compared: int = 0  # pages fetched for this one (K when the first K agree)


def item_digests(body: bytes) -> dict[str, bytes]:
    """update id -> digest of (record time, content with sorted keys). A body that is not a page
    (HTML, truncated JSON) digests as one item of its own, so it disagrees with every real page."""
    try:
        page = orjson.loads(body)
        items = page.get("transactions") if isinstance(page, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError("not a page")
    except ValueError:
        return {"<not a page>": hashlib.blake2b(body, digest_size=16).digest()}
    out = {}
    for item in items:
        canon = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        out[str(item.get("update_id"))] = hashlib.blake2b(canon, digest_size=16).digest()
    return out


def page_digest(items: dict[str, bytes]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for uid in sorted(items):
        h.update(uid.encode())
        h.update(items[uid])
    return h.digest()


def _order(urls: list[str], k: int, request: str, rng: random.Random | None, what: str) -> list[str]:
    """The scans in random order (as Splice's BFT client shuffles them), at least K of them."""
    order = list(urls)
    (rng or random).shuffle(order)
    if len(order) < k:
        raise NoAgreement(f"{request}: --agree {k} needs {k} {what}, only {len(order)} known")
    return order


def _busy(exc: BaseException) -> bool:
    """A 503: the scan timed out on this page or blipped; asking again (or smaller) can help."""
    return isinstance(exc, ScanHTTPError) and exc.status == 503


async def _fetch(fetch: Callable[[str], Awaitable[bytes]], urls: list[str],
                 errors: dict[str, BaseException]) -> dict[str, bytes]:  # fmt: skip
    """The same request to these scans at once: their bodies; failures go into `errors`. A scan
    that answers 503 is asked again (ASKS_PER_SCAN in all) before it counts as failed: one
    transient 503 of one scan must not cost the agreement."""
    bodies: dict[str, bytes] = {}
    todo = list(urls)
    for ask in range(ASKS_PER_SCAN):
        results = await asyncio.gather(*(fetch(u) for u in todo), return_exceptions=True)
        again = []
        for url, res in zip(todo, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                errors[url] = res
                if _busy(res) and ask + 1 < ASKS_PER_SCAN:
                    again.append(url)
            else:
                errors.pop(url, None)
                bodies[url] = res
        if not again:
            break
        todo = again
    return bodies


def _raise_if_busy(errors: dict[str, BaseException]) -> None:
    """No agreement while scans kept answering 503: the caller asks for a smaller page."""
    busy = [e for e in errors.values() if _busy(e)]
    if busy:
        raise busy[0]


def _group(digests: dict[str, bytes]) -> dict[bytes, list[str]]:
    groups: dict[bytes, list[str]] = {}
    for url, digest in digests.items():
        groups.setdefault(digest, []).append(url)
    return groups


def require_scans(k: int, scans: int) -> None:
    """`--agree K` with fewer than K scans could never store a page: refused once, up front."""
    if k > scans:
        raise ConfigError(f"--agree {k} needs {k} scans, only {scans} usable: pass more --scan-url (or --discover), "
                          "or a lower --agree")  # fmt: skip


def quorum(k: str | int, scans: int) -> int:
    """`--agree auto`: f+1 of n scans with f = (n - 1) // 3 (Byzantine: 3f+1 scans tolerate f faulty)."""
    if k == "auto":
        return (scans - 1) // 3 + 1
    return max(1, int(k))


async def agreed_page(fetch: Callable[[str], Awaitable[bytes]], urls: list[str], k: int, request: str,
                      rng: random.Random | None = None) -> Agreed:  # fmt: skip
    """Ask K scans at once, then one more at a time while no K agree; the agreed body, the scans
    that agreed, and what every other scan served differently."""
    order = _order(urls, k, request, rng, "scans with a complete history")
    bodies: dict[str, bytes] = {}
    canonical: dict[str, dict[str, bytes]] = {}  # url -> item digests, computed only when bytes differ
    errors: dict[str, BaseException] = {}
    pending, rest = order[:k], order[k:]
    while True:
        bodies.update(await _fetch(fetch, pending, errors))
        # fast path: identical bytes are identical content (honest scans serve the same V1 bytes)
        groups = _group({u: hashlib.blake2b(b, digest_size=16).digest() for u, b in bodies.items()})
        best = max(groups.values(), key=len, default=[])
        if len(best) < k and len(groups) > 1:
            # bytes differ: compare content (field order, whitespace and map order do not count)
            for url, body in bodies.items():
                if url not in canonical:
                    canonical[url] = item_digests(body)
            groups = _group({u: page_digest(d) for u, d in canonical.items()})
            best = max(groups.values(), key=len, default=[])
        if len(best) >= k:
            out = Agreed(bodies[best[0]], best, compared=len(bodies) + len(errors))
            others = [u for u in bodies if u not in best]
            if others:
                agreed_items = canonical.get(best[0]) or item_digests(bodies[best[0]])
                for url in others:
                    items = canonical.get(url) or item_digests(bodies[url])
                    differ = {u for u in agreed_items.keys() | items.keys() if agreed_items.get(u) != items.get(u)}
                    out.disagreements.append(Disagreement(url, request, tuple(sorted(differ))))
            return out
        if not rest:
            _raise_if_busy(errors)  # scans timed out on this page: the caller shrinks it and asks again
            seen = "; ".join(f"{u}: {len(g)} agreeing" for g in groups.values() for u in g[:1])
            failed = "; ".join(f"{u}: {e}" for u, e in errors.items())
            raise NoAgreement(f"{request}: no {k} scans returned the same page ({seen}"
                              f"{'; errors: ' + failed if failed else ''}); nothing of it was stored")  # fmt: skip
        need = max(1, k - len(best))
        pending, rest = rest[:need], rest[need:]


async def agreed_prefix(fetch: Callable[[str], Awaitable[bytes]], urls: list[str], k: int, request: str,
                        rng: random.Random | None = None, key: str = "transactions") -> Agreed:  # fmt: skip
    """For forward pages (`/v2/updates`) of scans at different heads: the longest run of updates,
    from the start of the page, that K scans served identically. A scan that is behind serves a
    shorter page that agrees as far as it goes; following never goes past what K scans have (the
    lowest head of the agreeing ones). Scans that differ inside the agreed run are named."""
    order = _order(urls, k, request, rng, "scans")
    pages: dict[str, list[tuple[str, bytes, bytes]]] = {}  # url -> [(update id, digest, raw item)]
    errors: dict[str, BaseException] = {}
    garbage: list[str] = []
    pending, rest = order[:k], order[k:]
    while True:
        for u, b in (await _fetch(fetch, pending, errors)).items():
            try:
                pages[u] = _items(b, key)
            except (MalformedPage, ValueError) as exc:  # garbage from one scan: it simply does not agree
                errors[u] = exc
                garbage.append(u)
        best: tuple[int, list[str]] | None = None
        for ref in pages:
            agreeing = sorted((u for u in pages if _agrees(pages[ref], pages[u])), key=lambda u: -len(pages[u]))[:k]
            if len(agreeing) >= k:
                n = min(len(pages[u]) for u in agreeing)
                if best is None or n > best[0]:
                    best = (n, agreeing)
        longest = max((len(p) for p in pages.values()), default=0)
        if best is not None and best[0] < longest and rest:
            best = None  # a scan has more: ask another, K may agree further (up to a higher head)
        if best is not None:
            n, agreeing = best
            items = pages[agreeing[0]][:n]
            out = Agreed(b'{"' + key.encode() + b'":[' + b",".join(i[2] for i in items) + b"]}", agreeing,
                         compared=len(pages) + len(errors))  # fmt: skip
            for url, theirs in pages.items():
                if url not in agreeing and not _agrees(items, theirs):
                    differ = [a[0] for a, b in zip(items, theirs, strict=False) if a[:2] != b[:2]]
                    out.disagreements.append(Disagreement(url, request, tuple(differ or [t[0] for t in theirs[:1]])))
            out.disagreements.extend(Disagreement(url, request, ("<not a page>",)) for url in garbage)
            return out
        if not rest:
            _raise_if_busy(errors)
            failed = "; ".join(f"{u}: {e}" for u, e in errors.items())
            raise NoAgreement(f"{request}: no {k} scans served the same updates"
                              f"{' (errors: ' + failed + ')' if failed else ''}; nothing of it was stored")  # fmt: skip
        pending, rest = rest[:1], rest[1:]


class _Page(msgspec.Struct):
    transactions: list[msgspec.Raw] = []
    events: list[msgspec.Raw] = []


def _items(body: bytes, key: str = "transactions") -> list[tuple[str, bytes, bytes]]:
    """(update id, digest, raw item) of a forward page's items. An events item is compared without
    its verdict's `finalization_time`, which honest scans do not share (each SV's mediator
    observes its own); everything else must be equal."""
    try:
        raws = getattr(msgspec.json.decode(body, type=_Page), key)
    except msgspec.DecodeError as exc:
        raise MalformedPage(f"not a valid {key} page: {exc}") from None
    out = []
    for raw in raws:
        data = bytes(raw)
        item = orjson.loads(data)
        if not isinstance(item, dict):
            raise MalformedPage(f"a {key} item that is not an object")
        uid = item.get("update_id")
        if key == "events":
            inner = item.get("update") or item.get("verdict") or {}
            uid = inner.get("update_id") if isinstance(inner, dict) else None
            verdict = item.get("verdict")
            if isinstance(verdict, dict) and "finalization_time" in verdict:
                item = {**item, "verdict": {k: v for k, v in verdict.items() if k != "finalization_time"}}
        canon = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        out.append((str(uid), hashlib.blake2b(canon, digest_size=16).digest(), data))
    return out


def _agrees(a: list[tuple[str, bytes, bytes]], b: list[tuple[str, bytes, bytes]]) -> bool:
    """Whether two forward pages agree as far as the shorter one goes."""
    return all(x[:2] == y[:2] for x, y in zip(a, b, strict=False))
