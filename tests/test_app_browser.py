"""The Gradio demo (app.py) driven in headless Chromium (Debian `chromium` + Playwright with the system browser;
never a browser download): bad uploads answered with a clear message while the app keeps serving, then a phantom
CT segmented with the overlay and per-class volumes shown. A screenshot is saved under test-artifacts/.

Needs: `pip install gradio playwright` and `apt-get install -y chromium`; skipped with the reason otherwise.
"""

import gzip
import importlib.util
import io
import os
import shutil
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

gradio = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'unicon_hf[app]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from PIL import Image  # noqa: E402

from unicon_hf.data.phantoms import write_hecktor_phantoms  # noqa: E402
from unicon_hf.handler import EndpointHandler  # noqa: E402
from unicon_hf.publish import assemble_repo  # noqa: E402

from test_model_card import make_model_repo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("UNICON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("UNICON_TEST_ARTIFACTS", ROOT / "test-artifacts"))
TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"Chromium not found at {CHROMIUM} "
                       "(apt-get install -y chromium)"),
]


def load_app_module():
    spec = importlib.util.spec_from_file_location("unicon_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model, _ = make_model_repo(tmp_path_factory.mktemp("model") / "unicon-demo")
    repo = tmp_path_factory.mktemp("repo") / "r"
    assemble_repo(model, repo)
    handler = EndpointHandler(str(repo), device="cpu")
    root = write_hecktor_phantoms(tmp_path_factory.mktemp("hecktor"), n=1, shape=(24, 32, 32), progress=False)
    bad = tmp_path_factory.mktemp("bad") / "notes.txt"
    bad.write_text("this is not a scan")
    app = load_app_module().build_app(handler=handler)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    yield {"url": f"http://127.0.0.1:{port}/", "handler": handler, "bad": bad,
           "ct": root / "imagesTr" / "CHUM-001__CT.nii.gz"}
    app.close()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def open_app(page, url):
    page.goto(url)
    page.locator("#run").wait_for(state="visible")


def upload(page, element_id, path):
    page.locator(f"#{element_id} input[type=file]").set_input_files(str(path))
    # Gradio shows the name as stem + last suffix on two lines: wait for the part before the first dot
    sync_api.expect(page.locator(f"#{element_id}")).to_contain_text(Path(path).name.split(".")[0])


def status_text(page, contains):
    locator = page.locator("#status")
    sync_api.expect(locator).to_contain_text(contains, timeout=TIMEOUT_MS)
    return locator.inner_text()


def test_bad_inputs_get_clear_messages(served, page):
    open_app(page, served["url"])
    page.locator("#run").click()
    status_text(page, "upload a CT first")
    upload(page, "ct", served["bad"])
    page.locator("#run").click()
    status_text(page, "not a NIfTI (.nii / .nii.gz) or PNG/JPEG file")
    # CT only for a CT+PET task
    open_app(page, served["url"])
    upload(page, "ct", served["ct"])
    page.locator("#task input").click()
    page.get_by_role("option", name="seg_ctpet").click()
    page.locator("#run").click()
    assert status_text(page, "needs CT and PET").count("Error") == 1
    # a volume over the configured limit (the app shares the endpoint handler's limits)
    handler = served["handler"]
    limit, handler.max_voxels = handler.max_voxels, 1000
    try:
        open_app(page, served["url"])
        upload(page, "ct", served["ct"])
        page.locator("#run").click()
        status_text(page, "over this endpoint's limit of 1,000 (UNICON_MAX_VOXELS)")
    finally:
        handler.max_voxels = limit


def test_segmentation_shows_overlay_and_volumes(served, page):
    open_app(page, served["url"])  # the same server, after the errors above: still serving
    upload(page, "ct", served["ct"])
    page.locator("#run").click()
    status_text(page, "seg_ct (segmentation) done")
    image = page.locator("#views img")
    image.wait_for(state="visible")
    volumes = page.locator("#volumes")
    sync_api.expect(volumes).to_contain_text("GTVp")
    sync_api.expect(volumes).to_contain_text("GTVn")
    expected = served["handler"].predict_files(served["ct"], task="seg_ct").summary["volumes_ml"]
    for name, ml in expected.items():
        sync_api.expect(volumes).to_contain_text(f"{round(ml, 3):g}"[:5])
    shown = np.asarray(Image.open(io.BytesIO(image.screenshot())).convert("RGB")).astype(int)
    assert shown.shape[1] > 200 and shown.std() > 5  # a real picture, not a blank box
    if any(ml > 0 for ml in expected.values()):  # the overlay colours (GTVp red, GTVn green) are on screen
        red = (shown[..., 0] > shown[..., 1] + 40) & (shown[..., 0] > shown[..., 2] + 40)
        green = (shown[..., 1] > shown[..., 0] + 40) & (shown[..., 1] > shown[..., 2] + 40)
        assert red.any() or green.any()
    # The download link serves the label NIfTI on the input CT's grid.
    link = page.locator("#download a[href*='segmentation.nii.gz']").first
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(response.body()))
    ct = nib.load(served["ct"])
    assert labels.shape == ct.shape
    np.testing.assert_array_equal(labels.affine, ct.affine)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_segmentation.png"), full_page=True)
    assert (ARTIFACTS / "app_segmentation.png").stat().st_size > 10_000
