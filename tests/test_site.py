"""`dbench site`: the leaderboard as a static folder built from result rows alone.

The unit tests build from hand-made rows (and one tiny real run for the image grids); the
`browser` test opens the generated page from file:// in headless Chromium over the Chrome
DevTools Protocol and drives it (sorting, filtering, plots, a row page, screenshots)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("itables")
pytest.importorskip("altair")
pytest.importorskip("vl_convert")

from benchmark.cli import write_rows_file  # noqa: E402
from benchmark.tables import leaderboard  # noqa: E402

DISPLAY = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
ARCH = {"ConvNet": "ConvNet-3", "MLP": "MLP", "AlexNet": "AlexNet"}
METHODS = {  # key -> (label, display, kind, preset, params label)
    "random": ("random", "Random", "select", None, ""),
    "herding": ("herding", "Herding", "select", None, ""),
    "dm": ("dm.official", "DM", "distill", "official", "batch_real=64"),
    "dc": ("dc", "DC", "distill", None, ""),
    "full": ("full", "Whole dataset", "reference", None, ""),
    "ext": ("ext.paper", "Imported method", "imported", "paper", ""),
}


def _row(method, dataset, ipc, acc, net, *, arch_eval="ConvNet", arch_distill="ConvNet", protocol="dsa",
         budget="cpu", exp=0, **kw):
    label, display, kind, preset, params = METHODS[method]
    synset = f"{method[:3]}{dataset[:3]}{ipc}{arch_distill[:2]}{exp}"
    cell = f"c-{synset}-{arch_eval}-{protocol}-{budget}"
    r = dict(schema=2, task="grid", method=method, method_label=label, method_display=display, method_kind=kind,
             method_preset=preset, params_label=params, method_params={"batch_real": 64} if params else {},
             extractor_label="ConvNet trained 5 ep, embed" if method == "herding" else "", dataset=dataset,
             dataset_display=DISPLAY[dataset], ipc=ipc, arch_eval=arch_eval, arch_eval_display=ARCH[arch_eval],
             arch_distill=arch_distill, arch_distill_display=ARCH[arch_distill], protocol=protocol, budget=budget,
             precision="fp32", test_acc=acc, model_index=net, exp=exp, set_seed=100 + exp, model_seed=7 + net,
             synset_hash=synset, cell_hash=cell, cell_key=f"{method}/{dataset}/ipc{ipc}/{arch_distill}->{arch_eval}",
             resolved_config={"iterations": 200, "lr_img": 1.0} if kind == "distill" else {},
             method_config={"lr_img": None} if kind == "distill" else {}, iterations=200 if kind == "distill" else None,
             protocol_config={"epochs": 1000, "dsa_strategy": "color_crop_cutout_flip_scale_rotate"},
             budget_config={"name": budget}, git_commit="abc123", torch_version="2.14.1", dbench_version="0.1.0",
             python_version="3.11.7", hardware="cpu x2 test", device="cpu", train_time_s=1.5, epochs=1000,
             efficiency_baseline=None)
    r.update(kw)
    return r


def _rows():
    """Two datasets, three IPCs, selectors / distillation / the whole set / an imported row, a
    cross-architecture setting, and class-incremental rows."""
    acc = {"random": 50.0, "herding": 60.0, "dm": 80.0, "dc": 75.0, "ext": 82.0}
    rows = []
    for ds, base in (("mnist", 0.0), ("cifar10", -30.0)):
        for ipc, up in ((1, 0.0), (10, 10.0), (50, 14.0)):
            for m, a in acc.items():
                if ds == "cifar10" and m == "ext":
                    continue
                rows += [_row(m, ds, ipc, a + base + up + d, i) for i, d in enumerate((-1.0, 0.0, 1.5))]
        rows += [_row("full", ds, 0, 99.5 + base + d, i) for i, d in enumerate((-0.1, 0.1))]
    for arch, drop in (("MLP", 20.0), ("AlexNet", 12.0)):  # DM and Random of MNIST IPC 10 on other networks
        for m in ("dm", "random"):
            rows += [_row(m, "mnist", 10, acc[m] + 10 - drop + d, i, arch_eval=arch) for i, d in enumerate((0.0, 1.0))]
    for t in range(1, 4):  # class-incremental: 3 steps, one order, two networks
        for m, a in (("random", 90.0), ("dm", 95.0)):
            for i in range(2):
                rows.append(_row(m, "mnist", 10, a - 3 * t + i, i, task="continual", steps=3, step=t, order=0,
                                 classes_seen=3 * t, cell_hash=f"cl-{m}-{t}", name="cl_test"))
    return rows


def _curves(rows):
    return {r["synset_hash"]: {"curve": [[0, 30.0, 0.0], [100, 60.0, 12.0]], "iterations": 200, "wall_s": 25.0}
            for r in rows if r["method_kind"] == "distill" and r.get("task") == "grid"}


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    rows = _rows()
    path = tmp_path_factory.mktemp("rowsfile") / "rows" / "site_test.jsonl"
    write_rows_file(path, rows, _curves(rows))
    return path


def _board():
    return leaderboard([r for r in _rows() if r["task"] == "grid"])


def _build(rows_file, out, *extra, env=None):
    from typer.testing import CliRunner

    from benchmark.cli import app

    r = CliRunner().invoke(app, ["site", "--rows", str(rows_file), "--out", str(out), *extra], env=env)
    assert r.exit_code == 0, r.output
    return out / "index.html"


# ------------------------------------------------------------------------------ unit


def test_site_from_a_rows_file_is_self_contained(rows_file, tmp_path):
    index = _build(rows_file, tmp_path / "site", "--results-dir", str(tmp_path / "nostore"))
    text = index.read_text()
    board = _board()
    # one page per leaderboard line, linked from the table
    pages = sorted((tmp_path / "site" / "rows").glob("*.html"))
    assert len(pages) == len(board)
    for p in pages:
        assert f'href=\\"rows/{p.name}\\"' in text or f'href="rows/{p.name}"' in text
    # nothing is fetched from the network: every script and style is in the folder
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", text)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", text)
    assert not re.search(r"import[^;]{0,200}from\s*[\"']https?:", text)
    assert (tmp_path / "site" / "assets" / "vega-embed.js").stat().st_size > 100_000
    for css in re.findall(r'<link[^>]+href="([^"]+)"', text):
        assert (tmp_path / "site" / css).is_file(), css
    # the sections that have data: accuracy vs IPC, efficiency curves, cross-arch, continual
    for sid in ("accuracy-vs-ipc", "efficiency", "cross-architecture", "continual"):
        assert f'id="{sid}"' in text, sid
    specs = json.loads(re.search(r'id="chart-specs">(.*?)</script>', text, re.S).group(1))
    # accuracy vs IPC per dataset (2), efficiency per dataset x IPC with curves (6), MNIST IPC 10 cross-arch (1),
    # continual (1)
    assert len(specs) == 2 + 6 + 1 + 1
    csv = (tmp_path / "site" / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == len(board) + 1


def test_delta_vs_random_same_setting_and_badges(rows_file, tmp_path):
    from benchmark.site import display_frame, extra_columns, with_delta

    b = with_delta(_board())
    dm = b[(b.method_label == "dm.official") & (b.dataset == "mnist") & (b.ipc == 10) & (b.arch_eval == "MLP")].iloc[0]
    rnd = b[(b.method_label == "random") & (b.dataset == "mnist") & (b.ipc == 10) & (b.arch_eval == "MLP")].iloc[0]
    assert abs(dm.delta_random - (dm.acc_mean - rnd.acc_mean)) < 1e-9 and abs(dm.delta_random - 30.0) < 1e-9
    assert rnd.delta_random != rnd.delta_random  # Random itself: no delta
    full = b[b.method_label == "full"].iloc[0]
    assert full.delta_random != full.delta_random  # IPC 0 has no Random line
    view, idx = display_frame(b, extra_columns(b))
    line = view.iloc[int(b.index[(b.method_label == "dm.official") & (b.arch_eval == "MLP")][0])]
    assert line["Δ vs random"] == "+30.0" and line["kind"].startswith('<span class="badge kind kind-distill"')
    assert '<span class="badge protocol protocol-dsa">dsa</span>' == line["protocol"]
    assert "badge budget budget-cpu" in line["budget"]
    pub = view.iloc[int(b.index[(b.method_label == "random") & (b.dataset == "mnist") & (b.ipc == 1)][0])]
    # Random under dsa: the paper's Random is DC's protocol, shown greyed with its protocol, not as a match
    assert ">64.9 (dc)<" in pub["published"] and 'class="other-protocol"' in pub["published"]
    assert "DM (WACV 2023)" in pub["published"]
    assert {"dataset", "IPC", "protocol", "budget", "kind"} <= set(idx)


def test_extra_leaderboard_columns_are_shown(rows_file, tmp_path, monkeypatch):
    """Columns the leaderboard gains later (e.g. DD-Ranking scores) appear without site changes."""
    import benchmark.site as site
    import benchmark.tables as tables

    real = tables.leaderboard

    def more(rows, published=None):
        b = real(rows, published)
        return b.assign(LRS=[0.5 + i / 100 for i in range(len(b))], **{"paired p": ["0.01"] * len(b)})

    monkeypatch.setattr(site, "leaderboard", more)
    index = _build(rows_file, tmp_path / "site")
    text = index.read_text()
    assert "LRS" in text and "paired p" in text and "0.51" in text
    page = next((tmp_path / "site" / "rows").glob("*.html")).read_text()
    assert "<dt>LRS</dt>" in page


def test_large_tables_are_never_downsampled(tmp_path):
    """itables would drop the middle of a table above 64 KB by default; the site keeps every line."""
    rows = [_row("dm", "mnist", 10, 50.0 + i / 100, 0, params_label=f"lr_img={i}", cell_hash=f"c{i}")
            for i in range(700)]
    f = tmp_path / "big.jsonl"
    write_rows_file(f, rows, {})
    index = _build(f, tmp_path / "site", "--no-images")
    text = index.read_text()
    assert len(set(re.findall(r"rows/([0-9a-f]{12})\.html", text))) == 700
    assert "downsampl" not in text.lower()


def test_row_text_is_escaped(tmp_path):
    """Labels are data: a label with markup shows as text everywhere (table, charts, row page)."""
    evil = "DM<script>alert(1)</script>"
    rows = [_row("dm", "mnist", ipc, 80.0 + i, i, method_display=evil) for ipc in (1, 10) for i in range(2)]
    f = tmp_path / "evil.jsonl"
    write_rows_file(f, rows, {})
    index = _build(f, tmp_path / "site", "--no-images")
    for page in [index, *(tmp_path / "site" / "rows").glob("*.html")]:
        assert "<script>alert(1)" not in page.read_text()


def test_row_page_shows_networks_config_and_provenance(rows_file, tmp_path):
    from benchmark.site import line_id

    _build(rows_file, tmp_path / "site")
    b = _board()
    dm = b[(b.method_label == "dm.official") & (b.dataset == "mnist") & (b.ipc == 1)].iloc[0]
    page = (tmp_path / "site" / "rows" / f"{line_id(dm.to_dict())}.html").read_text()
    assert page.count("<tr><td>") == 3  # three networks
    assert "&#34;lr_img&#34;: 1.0" in page or '"lr_img": 1.0' in page  # the resolved config
    assert "abc123" in page and "2.14.1" in page and "cpu x2 test" in page
    assert "MLflow" not in page  # no run id in these rows
    assert "<img" not in page  # no store: no images


def test_site_builds_with_torch_and_method_code_unimportable(rows_file, tmp_path, torchless_cli):
    out = tmp_path / "site"
    r = torchless_cli("site", "--rows", str(rows_file), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert len(list((out / "rows").glob("*.html"))) == len(_board())
    assert 'id="continual"' in (out / "index.html").read_text()  # the plot, without the torch-side table


def test_no_rows_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from benchmark.cli import app

    r = CliRunner().invoke(app, ["site", "--results-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "no result rows" in r.output


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    """A tiny real run (Random on Digits, smoke budget), whose set is in the store."""
    from benchmark.grid import GridSpec, expand
    from benchmark.runner import run_cells
    from benchmark.store import ResultStore
    from benchmark.tracking import make_tracker

    root = tmp_path_factory.mktemp("site_store") / "store"
    grid = GridSpec(name="site_t", methods=["random"], datasets=["digits"], ipc=[1], protocol="dsa", budget="smoke",
                    num_exp=1, num_eval=1)
    out = run_cells(expand(grid), ResultStore(root), make_tracker(None, root, enabled=False))
    assert {o.status for o in out} == {"finished"}
    return root


def test_image_grid_when_the_set_is_in_the_store(real_store, tmp_path):
    from typer.testing import CliRunner

    from benchmark.cli import app

    out = tmp_path / "site"
    r = CliRunner().invoke(app, ["site", "--results-dir", str(real_store), "--out", str(out)])
    assert r.exit_code == 0, r.output
    imgs = list((out / "img").glob("*.png"))
    assert len(imgs) == 1 and imgs[0].read_bytes()[:4] == b"\x89PNG"
    page = next((out / "rows").glob("*.html")).read_text()
    assert f'src="../img/{imgs[0].name}"' in page
    # --no-images: the same site without the grid
    r = CliRunner().invoke(app, ["site", "--results-dir", str(real_store), "--out", str(tmp_path / "s2"),
                                 "--no-images"])
    assert r.exit_code == 0 and "<img" not in next((tmp_path / "s2" / "rows").glob("*.html")).read_text()


# --------------------------------------------------------------------------- browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Page:
    """A headless Chromium page driven over the Chrome DevTools Protocol (websocket-client)."""

    def __init__(self, exe: str, profile: Path):
        import websocket

        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a stale one from an earlier browser
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if time.time() - t0 > 60 or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        self.n, self.session, self.ws = 0, None, None
        self.events: list[dict] = []
        try:
            self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=60, suppress_origin=True)
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable")
        except Exception:
            self.close()
            raise

    def send(self, method: str, **params):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def js(self, expr: str):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float = 60.0):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expr}")

    def goto(self, url: str):
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:500])
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        return out

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, width: int, height: int, mobile: bool) -> Path:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        time.sleep(1.0)  # DataTables and Vega re-layout on resize
        full = min(int(self.js("document.documentElement.scrollHeight")), 12000)
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": full, "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self):
        if self.ws is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


LB = "#leaderboard"
# the leaderboard's header cells (with scrollX DataTables moves them into the scroll head)
HEADS = f"[...document.querySelector('{LB}').closest('.dt-scroll').querySelectorAll('.dt-scroll-head thead th')]"


@pytest.fixture
def chromium():
    """The browser's executable; skips (before any other fixture is built) when there is none."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    pytest.importorskip("websocket")
    return exe


@pytest.mark.browser
def test_site_in_headless_chromium(chromium, rows_file, real_store, tmp_path):
    exe = chromium
    from benchmark.site import efficiency_points
    from benchmark.store import ResultStore

    out = tmp_path / "site"
    index = _build(rows_file, out, "--results-dir", str(real_store))
    shots = Path(os.environ.get("DBENCH_SITE_SHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    board = leaderboard([r for r in _rows() if r["task"] == "grid"] + list(ResultStore(real_store).iter_rows()))
    n = len(board)
    n_charts = len(json.loads(re.search(r'id="chart-specs">(.*?)</script>', index.read_text(), re.S)
                              .group(1)))
    assert not efficiency_points([r for r in _rows() if r["task"] == "grid"], _curves(_rows())).empty
    page = Page(exe, tmp_path / "profile")
    try:
        page.goto(index.as_uri())
        page.wait(f"document.querySelectorAll('table.dataTable').length >= 2 && "
                  f"document.querySelectorAll('{LB} tbody tr').length > 0")
        page.wait(f"document.querySelectorAll('.chart canvas, .chart svg').length >= {n_charts}")
        # every line is in the table (no down-sampling), the info line agrees
        assert page.js(f"document.querySelectorAll('{LB} tbody tr').length") == n
        info = page.js(f"document.querySelector('{LB}').closest('.dt-container').querySelector('.dt-info').textContent")
        assert f"of {n} entries" in info
        # sorting: click the 'ours' header -> ascending, again -> descending (DataTables sorts in a timeout)
        col = page.js(f"{HEADS}.findIndex(th => th.textContent.trim() === 'ours')")
        assert col >= 0
        values = (f"[...document.querySelectorAll('{LB} tbody tr')].map(tr => parseFloat(tr.children[{col}]"
                  ".textContent)).filter(v => !isNaN(v))")
        click = f"{HEADS}.find(th => th.textContent.trim() === 'ours').click()"
        page.js(click)
        page.wait(f"(v => v.every((x, i) => i === 0 || v[i - 1] <= x))({values})")
        assert len(page.js(values)) == n
        page.js(click)
        page.wait(f"(v => v.every((x, i) => i === 0 || v[i - 1] >= x))({values})")
        desc = page.js(values)
        assert desc == sorted(desc, reverse=True) and desc[0] > desc[-1]
        # filtering: the search box
        page.js("(() => { const i = document.querySelector('div.dt-search input'); i.value = 'Herding';"
                " i.dispatchEvent(new Event('input', {bubbles: true})); })()")
        herding = int((board.label == "Herding").sum())
        page.wait(f"document.querySelectorAll('{LB} tbody tr').length === {herding}")
        assert all("Herding" in t for t in page.js(f"[...document.querySelectorAll('{LB} tbody tr')]"
                                                   ".map(tr => tr.children[0].textContent)"))
        page.js("(() => { const i = document.querySelector('div.dt-search input'); i.value = '';"
                " i.dispatchEvent(new Event('input', {bubbles: true})); })()")
        page.wait(f"document.querySelectorAll('{LB} tbody tr').length === {n}")
        # filtering: the 'kind' pane -> only distillation lines
        distill = int((board.method_kind == "distill").sum())
        page.js("[...document.querySelectorAll('div.dtsp-searchPane')].find(p => p.querySelector("
                "'input.dtsp-search')?.placeholder === 'kind').querySelectorAll('tbody tr')"
                ".forEach(tr => { if (tr.textContent.includes('distill')) tr.querySelector('td').click(); })")
        page.wait(f"document.querySelectorAll('{LB} tbody tr').length === {distill}")
        kinds = page.js(f"[...document.querySelectorAll('{LB} tbody tr')].map(tr => tr.querySelector('.badge.kind')"
                        ".textContent)")
        assert set(kinds) == {"distill"}
        laptop = page.screenshot(shots / "site_laptop.png", 1366, 800, mobile=False)
        # the phone width: reload under the emulated screen
        page.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=1, mobile=True)
        page.goto(index.as_uri())
        page.wait(f"document.querySelectorAll('{LB} tbody tr').length === {n}")
        page.wait(f"document.querySelectorAll('.chart canvas, .chart svg').length >= {n_charts}")
        phone = page.screenshot(shots / "site_phone.png", 390, 844, mobile=True)
        # a row page: the networks and the synthetic set's image grid of the real run
        page.send("Emulation.clearDeviceMetricsOverride")
        href = page.js(f"[...document.querySelectorAll('{LB} tbody tr a')].find(a => a.textContent === 'Random' && "
                       "a.closest('tr').textContent.includes('Digits')).href")
        page.goto(href)
        page.wait("document.querySelector('h1') !== null")
        assert page.js("document.querySelector('h1').textContent") == "Random"
        assert page.js("document.querySelectorAll('#networks tbody tr').length") == 1
        page.wait("[...document.images].length === 1 && document.images[0].complete && "
                  "document.images[0].naturalWidth > 0")
        row_shot = page.screenshot(shots / "site_row.png", 1366, 800, mobile=False)
        errors = page.errors()
        remote = [u for u in page.requested() if not u.startswith(("file:", "data:", "blob:"))]
    finally:
        page.close()
    print(f"\nscreenshots: {laptop} {phone} {row_shot}")
    assert errors == []
    assert remote == []


def test_delta_vs_random_is_the_tables_paired_difference():
    """The site's "Δ vs random" is the leaderboard's paired diff_random where networks pair (one
    notion across tables and site), and a difference of means marked unpaired where none do."""
    from benchmark.site import display_frame, extra_columns, with_delta

    rows = [_row("random", "mnist", 1, a, i) for i, a in enumerate((50.0, 52.0))]  # random: networks 0, 1
    rows += [_row("dm", "mnist", 1, a, i) for i, a in enumerate((80.0, 81.0, 95.0))]  # dm: networks 0, 1, 2
    rows += [_row("random", "mnist", 10, 60.0, 0), _row("dm", "mnist", 10, 90.0, 0, exp=1, set_seed=999)]
    b = with_delta(leaderboard(rows))
    dm1 = b[(b.method_label == "dm.official") & (b.ipc == 1)].iloc[0]
    assert abs(dm1.delta_random - 29.5) < 1e-9  # pairs (80-50, 81-52); the mean difference would be 34.33
    assert abs(dm1.delta_random - dm1.diff_random) < 1e-9 and dm1.delta_random_paired
    dm10 = b[(b.method_label == "dm.official") & (b.ipc == 10)].iloc[0]
    assert not dm10.delta_random_paired and abs(dm10.delta_random - 30.0) < 1e-9  # different set seeds: no pair
    view, _ = display_frame(b, extra_columns(b))
    shown = {int(r.ipc): view.iloc[i]["Δ vs random"] for i, r in enumerate(b.itertuples())
             if r.method_label == "dm.official"}
    assert shown == {1: "+29.5", 10: "+30.0 (unpaired)"}
