"""The explorer page at / in real headless Chromium: drawing, uploading, every layer's
feature maps, Grad-CAM, keyboard and phone width; nothing leaves the service, nothing logs an
error. Screenshots of each state go to test-artifacts/explorer/ (gitignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import ADMIN_KEY, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium"),
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "explorer"
SAMPLES = ROOT / "models" / "cifar10" / "1" / "samples"
# a 7 as fractions of the canvas: the bar, then the stem
SEVEN = [[(0.25, 0.22), (0.50, 0.22), (0.75, 0.22)], [(0.75, 0.22), (0.60, 0.50), (0.45, 0.82)]]
NON_BLANK = """(li) => {
  const img = li.querySelector('.maps img');
  if (!img || !img.complete || !img.naturalWidth) return false;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 !== 3 && v > 0);
}"""


@pytest.fixture
def explorer(page, server_url):
    """The page, loaded, collecting console errors and uncaught exceptions."""
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.goto(f"{server_url}/")
    page.wait_for_selector("[data-testid=layer]")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.errors = errors
    yield page
    assert not errors, errors


def _draw(page, strokes) -> None:
    box = page.get_by_test_id("draw").bounding_box()
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def _layer_count(page, server_url, model: str) -> int:
    return len(page.request.get(f"{server_url}/models/{model}/versions/1").json()["layers"])


def _wait_for_label(page, label: str) -> None:
    page.wait_for_function(
        "(label) => document.querySelector('[data-testid=prediction]').textContent === label",
        arg=label,
        timeout=15_000,
    )


def _all_layers_drawn(page, count: int) -> None:
    layers = page.get_by_test_id("layer")
    assert layers.count() == count
    page.wait_for_function(
        f"() => [...document.querySelectorAll('[data-testid=layer]')].every({NON_BLANK})",
        timeout=15_000,
    )


def test_drawing_a_seven_reads_seven_and_shows_every_layer(explorer, server_url):
    page = explorer
    _draw(page, SEVEN)
    _wait_for_label(page, "7")
    _all_layers_drawn(page, _layer_count(page, server_url, "digit_odd"))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=gradcam]').src.startsWith('data:image/png')"
    )
    assert page.get_by_test_id("gradcam").is_visible()
    assert page.locator("#seen").get_attribute("src").startswith("data:image/png")
    top_bar = page.evaluate(
        "() => { const f = document.querySelector('.bar.top .fill');"
        " return f.getBoundingClientRect().width"
        " / f.parentElement.getBoundingClientRect().width; }"
    )
    assert top_bar > 0.5  # the 7's probability bar is drawn that long
    page.wait_for_selector("#layer-digit_dense .maps img.bars")
    heights = page.evaluate(
        """() => {  // the dense layer's bar chart: the coloured pixels of each bar's middle
      const img = document.querySelector('#layer-digit_dense .maps img');
      const c = document.createElement('canvas');
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const width = img.naturalWidth / 10, heights = [];
      for (let b = 0; b < 10; b++) {
        const column = ctx.getImageData(b * width + width / 2, 0, 1, c.height).data;
        let n = 0;
        for (let y = 0; y < c.height; y++) if (column[y * 4 + 2] > 200 && column[y * 4] < 100) n++;
        heights.push(n);
      }
      return heights;
    }"""
    )
    assert heights.index(max(heights)) == 7 and max(heights) > 40  # the softmax's 7, as a bar
    page.screenshot(path=ARTIFACTS / "draw-seven.png", full_page=True)
    # undo the stem: no longer a 7; clear: nothing to say
    page.click("#undo")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=prediction]').textContent !== '7'"
    )
    page.click("#clear")
    _wait_for_label(page, "–")


def test_uploading_a_cifar10_image_reads_its_class(explorer, server_url):
    page = explorer
    page.select_option("#model", "cifar10")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=layer]').length === "
        f"{_layer_count(page, server_url, 'cifar10')}"
    )
    page.set_input_files("#upload", str(SAMPLES / "ship.png"))
    _wait_for_label(page, "ship")
    _all_layers_drawn(page, _layer_count(page, server_url, "cifar10"))
    page.wait_for_function(
        "() => document.querySelector('#cam-caption').textContent.includes('class = ship')"
    )
    page.screenshot(path=ARTIFACTS / "upload-ship.png", full_page=True)


def test_each_version_offers_its_own_samples(explorer, server_url):
    """Samples live with the version (cnn-serve import --samples): the ResNet offers CIFAR
    photos, the digit model digits; a click reads the sample with the model shown."""
    page = explorer
    page.select_option("#model", "cifar10_resnet")
    buttons = page.locator("#samples button")
    page.wait_for_function("() => document.querySelector('#samples img[alt$=cat]')")
    assert buttons.evaluate_all("(b) => b.map((x) => x.title)") == [
        "airplane",
        "cat",
        "horse",
        "ship",
    ]
    page.locator("#samples button[title=cat]").click()
    assert page.get_by_test_id("layer").count() == _layer_count(page, server_url, "cifar10_resnet")
    _maps_shown(page, "[data-testid=layer-group][open] [data-testid=layer]")  # 73: grouped
    assert page.locator("[data-testid=layer-group]:not([open])").count() > 0
    page.wait_for_function(
        "() => document.querySelector('#cam-caption').textContent.includes('stage3_block3_out')"
    )  # the last residual block
    page.select_option("#model", "digit_odd")
    page.wait_for_function("() => document.querySelector('#samples button[title=digit-2]')")
    assert buttons.count() == 3
    page.locator("#samples button[title=digit-2]").click()
    _wait_for_label(page, "2")
    _all_layers_drawn(page, _layer_count(page, server_url, "digit_odd"))


def test_switching_model_keeps_an_input_it_takes_and_clears_one_it_does_not(explorer):
    """A drawn 7 stays for digit_odd_plus (the same 28x28 digits) and is read again; a colour
    photo model gets a clean canvas, not the 7 (before: "circle 52.8 %" for a 7)."""
    page = explorer
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    _draw(page, SEVEN)
    _wait_for_label(page, "7")
    page.select_option("#model", "digit_odd_plus")
    page.wait_for_function(
        "() => performance.getEntriesByType('resource')"
        ".some((e) => e.name.includes('/models/digit_odd_plus/feature-maps'))",
        timeout=15_000,
    )
    _wait_for_label(page, "7")
    posted.clear()
    page.select_option("#model", "cifar10")
    _wait_for_label(page, "–")
    page.wait_for_timeout(500)  # anything that would have been sent has been by now
    assert not posted, posted
    blank = page.evaluate(
        "() => { const c = document.querySelector('#draw');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " return d.every((v) => v === 255); }"
    )
    assert blank


def test_channels_grad_cam_choices_and_scaling(explorer):
    page = explorer
    page.locator("#samples button").first.click()  # the digit 2 sample
    _wait_for_label(page, "2")
    first_conv = page.locator("#layer-conv2d_layer .maps img")
    first_conv.focus()
    page.keyboard.press("Enter")  # keyboard: enlarge the first channel
    assert page.locator("#channel").is_visible()
    assert page.locator("#channel-caption").inner_text().startswith("conv2d_layer, channel 1 of 32")
    page.click("#channel-next")
    assert "channel 2 of 32" in page.locator("#channel-caption").inner_text()
    box = first_conv.bounding_box()
    first_conv.click(position={"x": box["width"] - 3, "y": 3})  # the top right tile
    assert "channel 6 of 32" in page.locator("#channel-caption").inner_text()
    page.select_option("#cam-head", "odd")
    page.wait_for_function(
        "() => document.querySelector('#cam-caption').textContent.startsWith('odd = ')"
    )
    page.select_option("#cam-head", "digit")
    page.select_option("#cam-class", "3")
    page.select_option("#cam-layer", "conv2d_layer")
    page.wait_for_function(
        "() => document.querySelector('#cam-caption').textContent"
        " === 'digit = 3, at layer conv2d_layer (red: most evidence)'"
    )
    page.check("input[value=per_channel]")
    page.wait_for_function(
        "() => document.querySelector('#layer-conv2d_layer .range')"
        ".textContent.includes('each channel scaled alone')"
    )
    page.screenshot(path=ARTIFACTS / "channel-and-gradcam.png", full_page=True)


def test_errors_are_shown_in_words(explorer, tmp_path):
    page = explorer
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not an image")
    page.set_input_files("#upload", str(junk))
    page.wait_for_selector("#error:not([hidden])")
    message = page.locator("#error").inner_text()
    assert "400" in message and "not a decodable image" in message, message
    assert not page.locator("#seen").is_visible()  # no stale or broken picture
    page.screenshot(path=ARTIFACTS / "error.png")
    # the browser reports the 400 it was meant to get; nothing else
    page.errors[:] = [e for e in page.errors if "status of 400" not in e]


def test_readable_at_phone_width(explorer):
    page = explorer
    page.set_viewport_size({"width": 390, "height": 844})
    _draw(page, SEVEN)
    _wait_for_label(page, "7")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=ARTIFACTS / "phone.png", full_page=True)


BUSY = '{"error": {"status": 503, "code": "overloaded", "message": "busy"}}'


def test_a_busy_answer_is_retried_after_its_retry_after(explorer):
    """Explain and feature maps answer 503 + Retry-After when the heavy-work thread is busy
    with others; the page waits and asks again instead of showing an error."""
    page = explorer
    refused: list[str] = []

    def busy_once(route):
        if not refused:
            refused.append(route.request.url)
            route.fulfill(
                status=503, headers={"Retry-After": "1"}, content_type="application/json", body=BUSY
            )
        else:
            route.continue_()

    page.route("**/explain", busy_once)
    try:
        _draw(page, SEVEN)
        _wait_for_label(page, "7")
        # the refused request may be one made mid-stroke: wait for the finished drawing's
        # explanation, not for the first picture
        page.wait_for_function(
            "() => document.querySelector('[data-testid=gradcam]').src.startsWith('data:image/png')"
            " && document.querySelector('#cam-caption').textContent.startsWith('digit = 7')",
            timeout=15_000,
        )
        assert refused
    finally:
        # the browser reports the refused request on its console; nothing else may appear there
        page.errors[:] = [e for e in page.errors if "503" not in e]


@pytest.fixture(scope="module")
def own_models_url(tmp_path_factory):
    """A service over a user's models: the committed cifar10's model.keras imported as
    ``photos`` (values 0..1), ``signed`` (-1..1) and ``bytes`` (0..255), a grayscale
    functional model whose input is not named ``image`` as ``shapes``, and cifar10's SavedModel
    dropped in without metadata as ``dropped`` (heads.json says its head is multiclass)."""
    import shutil

    from service.app import create_app
    from service.settings import Settings
    from tests.service.conftest import serving
    from tests.training.test_importer import two_heads
    from training.import_command import main as import_main
    from training.metadata import ModelMetadata

    repo = tmp_path_factory.mktemp("own")
    cifar = ROOT / "models" / "cifar10" / "1"
    labels = repo / "labels.txt"
    labels.write_text("\n".join(ModelMetadata.read(cifar).outputs[0].labels) + "\n")
    models = repo / "models"
    assert (
        import_main(
            [
                str(cifar / "model.keras"),
                "--name",
                "photos",
                "--labels",
                str(labels),
                "--model-dir",
                str(models),
            ],
            models,
        )
        == 0
    )
    for name, values in (("signed", "-1,1"), ("bytes", "0,255")):  # other value ranges
        argv = [str(cifar / "model.keras"), "--name", name, "--value-range", values]
        assert import_main([*argv, "--model-dir", str(models)], models) == 0
    two_heads().save(repo / "shapes.keras")  # functional, its input named "pixels"
    assert import_main([str(repo / "shapes.keras"), "--name", "shapes"], models) == 0
    shutil.copytree(
        cifar,
        models / "dropped" / "1",
        ignore=shutil.ignore_patterns("metadata.json", "model.keras"),
    )
    shutil.copy(labels, models / "dropped" / "1" / "labels.txt")
    (models / "dropped" / "1" / "heads.json").write_text('{"class": "multiclass"}')
    app = create_app(
        Settings(
            model_dir=models,
            device="cpu",
            default_model="photos",
            model_uploads=True,
            admin_keys=ADMIN_KEY,
        )
    )
    with serving(app) as url:
        yield f"http://{url}"


@pytest.fixture
def own_page(own_models_url):
    """The explorer of the service over a user's models, failing on any page error."""
    from playwright.sync_api import sync_playwright

    from tests.service.conftest import FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{own_models_url}/")
        page.wait_for_selector("[data-testid=layer]")
        yield page
        browser.close()
        assert not errors, errors


def test_the_explorer_shows_a_users_imported_and_dropped_in_models(own_page, own_models_url):
    page = own_page
    assert page.input_value("#model") == "photos"
    page.wait_for_function(
        "() => document.querySelector('#samples-hint').textContent.includes('keeps no samples')"
    )
    assert page.locator("#samples button").count() == 0  # imported without --samples
    page.set_input_files("#upload", str(SAMPLES / "ship.png"))
    _wait_for_label(page, "ship")
    _all_layers_drawn(page, _layer_count(page, own_models_url, "photos"))
    page.wait_for_function(
        "() => document.querySelector('#cam-caption').textContent.includes('class = ship')"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "imported-model.png", full_page=True)
    page.select_option("#model", "dropped")  # the upload stays; no layers to show
    page.wait_for_function(
        "() => document.querySelector('#cam-caption').textContent"
        ".includes('without its Keras model')"
    )
    _wait_for_label(page, "ship")
    assert page.get_by_test_id("layer").count() == 0


@pytest.mark.parametrize(("model", "mode"), [("signed", "RGB"), ("bytes", "RGB"), ("shapes", "L")])
def test_the_input_preview_shows_the_picture_whatever_the_value_range(own_page, model, mode):
    """The model's input mapped back to display pixels by the version's value range: the
    preview is the uploaded picture at the input size (before: white for 0..255, dark and
    clamped for -1..1, and none for an input layer not named ``image``)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    page = own_page
    before = page.get_attribute("#seen", "src")
    page.select_option("#model", model)
    page.set_input_files("#upload", str(SAMPLES / "ship.png"))
    page.wait_for_function(
        "(before) => { const s = document.querySelector('#seen');"
        " return !s.hidden && s.src.startsWith('data:') && s.src !== before; }",
        arg=before or "",
        timeout=30_000,
    )
    shown = page.get_attribute("#seen", "src").split(",", 1)[1]
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown))).convert("RGB"), float)
    sent = Image.open(SAMPLES / "ship.png").convert(mode).convert("RGB")
    sent = sent.resize(seen.shape[1::-1])
    difference = np.abs(seen - np.asarray(sent, float)).mean()
    assert difference <= 40, f"mean absolute difference {difference:.1f} of 255"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#result-panel").screenshot(path=ARTIFACTS / f"preview-{model}.png")


def test_open_your_model_uploads_it_and_shows_it(own_page, own_models_url, tmp_path):
    """With uploads on, a .keras file picked in the page becomes a served model, selected."""
    import shutil

    page = own_page
    mine = tmp_path / "my cifar.keras"
    shutil.copy(ROOT / "models" / "cifar10" / "1" / "model.keras", mine)
    assert page.locator("#open-model-box").is_visible()
    page.set_input_files("#open-model", str(mine))  # uploads take an admin key: asked for
    page.wait_for_selector("#key-box", state="visible")
    assert "admin key" in page.text_content("#error")
    page.fill("#api-key", ADMIN_KEY)
    page.press("#api-key", "Enter")
    page.set_input_files("#open-model", str(mine))
    page.wait_for_function(
        "() => document.querySelector('#model').value === 'my_cifar'", timeout=60_000
    )
    page.set_input_files("#upload", str(SAMPLES / "horse.png"))
    _wait_for_label(page, _label_of(own_models_url, "horse.png"))  # a class index: no labels
    assert page.get_by_test_id("layer").count() == _layer_count(page, own_models_url, "my_cifar")


def _label_of(url: str, sample: str) -> str:
    """What the service itself says of a sample with the uploaded model (labels: indices)."""
    import httpx

    r = httpx.post(
        f"{url}/predict",
        data={"model": "my_cifar"},
        files={"file": (sample, (SAMPLES / sample).read_bytes())},
        timeout=30,
    )
    return r.json()["predictions"][0]["outputs"]["class"]["label"]


@pytest.fixture(scope="module")
def mobilenet_url(tmp_path_factory):
    """A MobileNetV2 (alpha 0.35, no weights: nothing downloaded) transfer model over -1..1,
    the base nested as Keras applications nest it: 158 layers."""
    import keras

    from service.app import create_app
    from service.settings import Settings
    from tests.service.conftest import serving
    from training.import_command import main as import_main

    repo = tmp_path_factory.mktemp("mobile")
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None
    )
    image = keras.Input((96, 96, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base(image))
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax", name="shape")(x))
    model.save(repo / "mobile.keras")
    models = repo / "models"
    argv = [str(repo / "mobile.keras"), "--name", "mobile", "--value-range", "-1,1"]
    assert import_main([*argv, "--model-dir", str(models)], models) == 0
    app = create_app(Settings(model_dir=models, device="cpu", default_model="mobile"))
    with serving(app) as url:
        yield f"http://{url}"


def _maps_shown(page, selector: str) -> None:
    page.wait_for_function(
        f"() => [...document.querySelectorAll({selector!r})].every("
        "(li) => { const img = li.querySelector('.maps img');"
        " return img && img.complete && img.naturalWidth > 0; })",
        timeout=60_000,
    )


def test_a_150_layer_model_is_grouped_and_fetches_what_is_opened(mobilenet_url):
    from playwright.sync_api import sync_playwright

    from tests.service.conftest import FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        asked: list[str] = []
        page.on("request", lambda r: "feature-maps" in r.url and asked.append(r.url))
        page.goto(f"{mobilenet_url}/")
        page.wait_for_selector("[data-testid=layer-group]")
        groups = page.get_by_test_id("layer-group")
        total = page.get_by_test_id("layer").count()
        assert total > 150 and groups.count() >= 15
        opened = page.locator("[data-testid=layer-group][open] [data-testid=layer]")
        assert 0 < opened.count() <= 12
        page.set_input_files("#upload", str(SAMPLES / "ship.png"))
        page.wait_for_function("() => document.querySelector('#prediction').textContent !== '–'")
        _maps_shown(page, "[data-testid=layer-group][open] [data-testid=layer]")
        # one prediction: the open groups' maps only, and a page of a readable height
        assert page.locator(".maps img").count() == opened.count()
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height <= 15_000, height
        assert page.get_by_test_id("branch-legend").is_visible()  # the residual adds
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "mobilenet.png", full_page=True)
        # a closed group opens, and only then are its layers fetched
        block = page.locator("[data-testid=layer-group]", has_text="block_5 (")
        assert block.get_attribute("open") is None
        block.locator("summary").click()
        _maps_shown(page, "[data-testid=layer-group][open] [data-testid=layer]")
        assert len(asked) == 2  # the prediction's, then the group's
        assert page.locator(".maps img").count() == opened.count()  # closed groups: none
        # the filter shows the matching layers, their groups opened
        page.fill("#layer-filter", "block_12_project")
        visible = page.locator("[data-testid=layer]:visible")
        names = visible.locator("strong").all_inner_texts()
        assert names and all("block_12_project" in n for n in names)
        _maps_shown(page, "[data-testid=layer]:not([hidden])")
        # a channel opens in place, in view
        page.locator(f"#{_css_id('layer-mobilenetv2_0.35_96/block_12_project')} .maps img").click()
        assert page.locator("#channel").is_visible()
        page.wait_for_function(  # scrolled into view once laid out
            "() => { const r = document.querySelector('#channel').getBoundingClientRect();"
            " return r.top >= 0 && r.bottom <= innerHeight; }",
            timeout=5_000,
        )
        assert (
            page.locator("#channel-caption")
            .inner_text()
            .startswith("mobilenetv2_0.35_96/block_12_project, channel")
        )
        page.screenshot(path=ARTIFACTS / "mobilenet-filtered.png")
        browser.close()
    assert not errors, errors


def _css_id(element_id: str) -> str:
    """An element id as a CSS selector's #id (dots and slashes escaped)."""
    return "".join(c if c.isalnum() or c in "-_" else f"\\{c}" for c in element_id)
