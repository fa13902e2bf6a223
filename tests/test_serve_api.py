"""The HTTP API of `ncf serve`, in process: every endpoint, every error, baselines, limits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")

from fastapi.testclient import TestClient  # noqa: E402
from serving import small_run  # noqa: E402

from ncf.baselines import EASE, ItemPop  # noqa: E402
from ncf.interactions import Interactions  # noqa: E402
from ncf.report import load_model  # noqa: E402
from ncf.serve.app import MAX_BODY, create_app  # noqa: E402
from ncf.serve.service import Service, normalise_text, top_k  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared small run, copied, with two baselines saved beside the NCF models."""
    run = tmp_path_factory.mktemp("api") / "run"
    shutil.copytree(small_run(tmp_path_factory), run)
    rec = load_model(run, "gmf")
    seen = rec._seen.tocoo()
    train = Interactions(seen.row.astype(np.int32), seen.col.astype(np.int32), None, None,
                         rec.n_users, rec.n_items, rec.user_raw, rec.item_raw)
    EASE(reg=100.0).fit(train).save(run / "models" / "ease.npz")
    ItemPop().fit(train).save(run / "models" / "itempop.npz")
    return run


@pytest.fixture(scope="module")
def service(run_dir: Path) -> Service:
    return Service(run_dir)


@pytest.fixture(scope="module")
def client(service: Service) -> TestClient:
    return TestClient(create_app(service))


def _user(service: Service, index: int = 3) -> int:
    return int(service.user_raw[index])


def _seen_raw(service: Service, index: int) -> set[int]:
    s = service.seen
    return set(service.item_raw[s.indices[s.indptr[index] : s.indptr[index + 1]]].tolist())


def test_health_and_info(client: TestClient, service: Service) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    info = client.get("/api/info").json()
    assert info["users"] == service.n_users and info["items"] == service.n_items
    assert info["interactions"] == 20_000 and info["catalog"] is True
    names = [m["name"] for m in info["models"]]
    assert names == ["ease", "gmf", "itempop", "mlp", "neumf"]
    assert info["default_model"] == "neumf"
    neumf = next(m for m in info["models"] if m["name"] == "neumf")
    assert 0 < neumf["test"]["sampled"]["hr"] <= 1 and neumf["hyper"]["factors"] == 8
    assert {m["name"] for m in info["models"] if m["fold_in"]} == set(names)
    assert info["data"]["synthetic"] is True


@pytest.mark.parametrize("model", ["gmf", "mlp", "neumf", "ease", "itempop"])
def test_known_user_top_k_matches_the_model_and_skips_seen(client: TestClient, service: Service,
                                                           model: str) -> None:
    user = _user(service)
    body = client.get(f"/api/users/{user}/recommendations", params={"k": 7, "model": model}).json()
    items = [r["item"] for r in body["items"]]
    assert body["model"] == model and len(items) == 7 and body["seen"] == len(_seen_raw(service, 3))
    assert not set(items) & _seen_raw(service, 3)
    assert all(r["title"] for r in body["items"]) and [r["rank"] for r in body["items"]] == \
        list(range(1, 8))
    # the same ranking as the library's recommend() (NCF: the model's own scorer)
    rec = service.models[model]
    want, _ = rec.recommend(np.array([3]), k=7)
    assert items == service.item_raw[want[0]].tolist()


def test_history_lists_what_the_user_saw(client: TestClient, service: Service) -> None:
    body = client.get(f"/api/users/{_user(service)}/history", params={"limit": 1000}).json()
    assert {r["item"] for r in body["items"]} == _seen_raw(service, 3)
    assert body["count"] == len(body["items"])


def test_new_user_is_folded_in_and_never_gets_its_items(client: TestClient,
                                                        service: Service) -> None:
    given = [int(x) for x in service.item_raw[[5, 17, 40]]]
    for model in ("gmf", "mlp", "neumf", "ease", "itempop"):
        body = client.post("/api/recommendations",
                           json={"items": given, "k": 10, "model": model}).json()
        items = [r["item"] for r in body["items"]]
        assert len(items) == 10 and not set(items) & set(given), model
        assert all(r["because"]["item"] in given for r in body["items"])
        assert sorted(g["item"] for g in body["given"]) == sorted(given)
    # itempop: the most popular items the user did not give
    pop = client.post("/api/recommendations", json={"items": given, "model": "itempop"}).json()
    order = [int(service.item_raw[i]) for i in np.argsort(-service.popularity, kind="stable")]
    assert [r["item"] for r in pop["items"]] == [i for i in order if i not in given][:10]
    # ratings are accepted and weigh the items; repeated items count once
    again = client.post("/api/recommendations",
                        json={"items": given + given[:1], "ratings": [5, 3, 4, 5]}).json()
    assert len(again["items"]) == 10 and len(again["given"]) == 3


def test_folding_in_a_known_users_items_resembles_their_recommendations(
        client: TestClient, service: Service) -> None:
    """Fold-in from a trained user's whole history lands near that user's own top-10."""
    overlaps = []
    for index in range(10):
        seen = sorted(_seen_raw(service, index))
        known = client.get(f"/api/users/{service.user_raw[index]}/recommendations",
                           params={"k": 10, "model": "gmf"}).json()
        new = client.post("/api/recommendations",
                          json={"items": seen, "k": 10, "model": "gmf"}).json()
        overlaps.append(len({r["item"] for r in known["items"]} &
                            {r["item"] for r in new["items"]}))
    assert np.mean(overlaps) >= 5, overlaps  # chance: 10 * 10 / ~220 unseen items, below 1


def test_similar_items(client: TestClient, service: Service) -> None:
    item = int(service.item_raw[7])
    for model in ("gmf", "mlp", "neumf"):
        body = client.get(f"/api/items/{item}/similar", params={"k": 5, "model": model}).json()
        sims = [r["similarity"] for r in body["items"]]
        assert body["model"] == model and body["vectors"] and len(sims) == 5
        assert item not in [r["item"] for r in body["items"]]
        assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
    vec = service.vectors["gmf"].numpy()
    best = int(np.argsort(-(vec @ vec[7]))[1])  # [0] is the item itself
    top = client.get(f"/api/items/{item}/similar", params={"k": 1, "model": "gmf"}).json()
    assert top["items"][0]["item"] == int(service.item_raw[best])
    assert client.get(f"/api/items/{item}/similar", params={"model": "ease"}).status_code == 422
    assert client.get(f"/api/items/{item}").json()["title"] == service.titles[7]


def test_search_ignores_case_and_accents(client: TestClient, service: Service) -> None:
    amelie = [i for i, t in enumerate(service.titles) if t and t.startswith("Amélie")]
    assert amelie, "the synthetic catalogue has Latin-1 titles"
    for q in ("amelie", "AMÉLIE", "  Amélie ", "amé"):
        found = {r["item"] for r in client.get("/api/search", params={"q": q}).json()["items"]}
        assert {int(service.item_raw[i]) for i in amelie} <= found, q
    body = client.get("/api/search", params={"q": "the", "limit": 5}).json()
    assert len(body["items"]) == 5 and all(normalise_text(r["title"]).startswith("the")
                                           for r in body["items"])
    assert client.get("/api/search", params={"q": "zzqqxx"}).json()["items"] == []
    assert normalise_text("Crème  Brûlée") == "creme brulee"


def test_unknown_ids_are_404_naming_the_id(client: TestClient, service: Service) -> None:
    for path in ("/api/users/nobody/recommendations", "/api/users/-1/history",
                 "/api/items/999999999/similar", "/api/items/abc"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"].startswith("unknown"), path
        assert path.split("/")[3] in r.json()["error"]
    r = client.post("/api/recommendations", json={"items": [int(service.item_raw[0]), 424242]})
    assert r.status_code == 404 and "424242" in r.json()["error"]


@pytest.mark.parametrize("params", [{"k": 0}, {"k": -3}, {"k": 101}, {"k": "ten"},
                                    {"k": 10**30}, {"model": "nope"}])
def test_bad_query_parameters_are_422(client: TestClient, service: Service,
                                      params: dict) -> None:
    r = client.get(f"/api/users/{_user(service)}/recommendations", params=params)
    assert r.status_code == 422 and r.json()["error"]


@pytest.mark.parametrize("body", [{}, {"items": []}, {"items": "5"}, {"items": [1.5]},
                                  {"items": [True]}, {"items": [None]}, {"items": [[1]]},
                                  {"items": [1], "k": 0}, {"items": [1], "k": 1000},
                                  {"items": [1], "extra": 1}, {"items": list(range(501))},
                                  {"items": [1], "ratings": [1, 2]},
                                  {"items": [1], "ratings": [-1]},
                                  {"items": [1], "model": "nope"}, [1, 2, 3], "text"])
def test_malformed_bodies_are_422(client: TestClient, service: Service, body: object) -> None:
    if isinstance(body, dict) and body.get("items") == [1] and body["items"][0] is not True:
        body = {**body, "items": [int(service.item_raw[0])]}  # a known item: the rest is wrong
    r = client.post("/api/recommendations", json=body)
    assert r.status_code == 422, (body, r.text)
    assert r.json()["error"]


def test_broken_json_and_oversized_bodies(client: TestClient) -> None:
    r = client.post("/api/recommendations", content=b"{\"items\": [1,",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    big = b"{\"items\": [" + b"1," * (MAX_BODY // 2) + b"1]}"
    r = client.post("/api/recommendations", content=big,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]

    def chunks():  # no Content-Length: refused once the limit is passed
        for _ in range(100):
            yield b"x" * 4096

    r = client.post("/api/recommendations", content=chunks(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_page_static_files_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "Search films by title" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../service.py").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/health", "/api/info", "/api/users/{user}/recommendations",
            "/api/users/{user}/history", "/api/recommendations", "/api/items/{item}/similar",
            "/api/search"} <= set(paths)
    assert client.get("/docs").status_code == 200
    assert client.get("/no/such/page").status_code == 404


def test_top_k_orders_and_excludes() -> None:
    scores = np.array([0.1, 0.9, np.nan, 0.5, 0.9, -np.inf])
    assert top_k(scores, 3).tolist() == [1, 4, 3]
    assert top_k(scores, 10, exclude=np.array([1])).tolist() == [4, 3, 0]


def test_a_run_without_titles_or_models(tmp_path: Path, run_dir: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "catalog.npz").unlink()
    service = Service(bare)
    client = TestClient(create_app(service))
    body = client.get("/api/search", params={"q": "the"}).json()
    assert body == {"query": "the", "catalog": False, "items": []}
    row = client.get(f"/api/items/{int(service.item_raw[0])}").json()
    assert row == {"item": int(service.item_raw[0])}
    assert client.get("/api/info").json()["catalog"] is False
    for name in ("gmf", "mlp", "neumf", "ease", "itempop"):
        (bare / "models" / f"{name}.npz").unlink()
    from ncf.errors import NcfError

    with pytest.raises(NcfError, match="no trained NCF model"):
        Service(bare)
    with pytest.raises(NcfError, match="no such run directory"):
        Service(tmp_path / "missing")
