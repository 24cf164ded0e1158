"""The `stenograph serve` page in Debian's headless Chromium (slow; runs in CI).

Chromium's fake microphone plays a WAV the test writes, so the page's live path
(getUserMedia, the AudioWorklet resampling to the model's rate, the WebSocket) hears
a known recording. The server must hear that recording whole, the page must show
the transcript the server's stream makes of what it heard, and an upload must show
the file's offline transcript. A screenshot is saved and must not be blank.
"""

import contextlib
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import PHRASES, tone_waveform  # noqa: E402
from test_serve import RATE, offline_transcript, start_server, trained_model  # noqa: E402

from stenograph.recipes.serve.redecode import RedecodeEndpointing  # noqa: E402
from stenograph.recipes.streaming import checked_chunk  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 60
ENDPOINTING = RedecodeEndpointing(pre_roll_seconds=0.05, post_roll_seconds=0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model_dir = trained_model(tmp_path_factory.getbasetemp())
    server = start_server(model_dir, endpointing=ENDPOINTING)
    yield model_dir, server
    server.stop()


@contextlib.contextmanager
def recorded_stream_audio(service):
    """Makes each new stream of `service` keep what it is fed, in a list yielded here."""
    fed: list[np.ndarray] = []
    create_stream = service.create_stream

    def create_recording_stream():
        stream = create_stream()
        feed = stream.feed

        def recording_feed(samples, *args, **kwargs):
            fed.append(np.array(samples))
            return feed(samples, *args, **kwargs)

        stream.feed = recording_feed
        return stream

    service.create_stream = create_recording_stream
    try:
        yield fed
    finally:
        del service.create_stream  # the class's method again


def best_matches(heard: np.ndarray, piece: np.ndarray) -> np.ndarray:
    """Normalised correlation of `piece` with every window of `heard`."""
    correlation = np.correlate(heard, piece, mode="valid")  # [len(heard) - len(piece) + 1]
    energy = np.convolve(heard**2, np.ones(len(piece)), mode="valid")  # same shape
    return correlation / (np.sqrt(energy) * np.linalg.norm(piece) + 1e-9)


def assert_heard_whole(heard: np.ndarray, sent: np.ndarray, piece_ms: int = 25) -> None:
    """Every sounding 25 ms piece of `sent` is in `heard`, near where the rest lie.

    The page resamples, and a real-time audio path may skip a few ms under load, so
    the pieces are matched one by one, each within 40 ms of the pieces' common
    offset; a lost start, a wrong rate or byte order leaves pieces unmatched.
    """
    size = RATE * piece_ms // 1000
    starts = [
        start
        for start in range(0, len(sent) - size, size)
        if np.abs(sent[start : start + size]).max() > 0.05
    ]
    assert starts and len(heard) >= len(sent), f"heard {len(heard)} samples of {len(sent)}"
    scores = {start: best_matches(heard, sent[start : start + size]) for start in starts}
    offset = int(np.median([int(np.argmax(score)) - start for start, score in scores.items()]))
    slack = RATE * 40 // 1000
    for start, score in scores.items():
        near = score[max(0, start + offset - slack) : max(0, start + offset + slack + 1)]
        best = float(near.max()) if len(near) else 0.0
        assert best > 0.98, f"the piece at {start / RATE:.3f} s was not heard (best {best:.3f})"


def transcript_of(service, audio: np.ndarray) -> str:
    """What a new stream of `service` makes of `audio` fed at once."""
    stream = service.create_stream()
    stream.feed(audio, RATE)
    return stream.finish().text


def make_browser(fake_audio: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for program in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(program):
            pytest.fail(f"{program} is missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_audio}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=900,1100",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(browser, condition, message):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(condition, message)


def text_of(browser, element_id):
    return browser.find_element("id", element_id).text.strip()


def test_page_transcribes_the_microphone_and_an_upload(served, tmp_path):
    model_dir, server = served
    wav = tmp_path / "speech.wav"
    sf.write(wav, tone_waveform(PHRASES[0]), RATE, subtype="PCM_16")
    sent = sf.read(wav, dtype="float32")[0]
    expected = offline_transcript(model_dir, wav)
    assert expected.text
    browser = make_browser(wav)
    try:
        browser.get(server.url + "/")
        wait_for(browser, lambda b: b.find_element("id", "mic").is_enabled(), "page not ready")
        assert "Ready" in text_of(browser, "status")

        # Live: the fake microphone plays the file once, then silence closes the segment.
        with recorded_stream_audio(server.state.service) as fed:
            browser.find_element("id", "mic").click()
            wait_for(browser, lambda b: text_of(b, "live-final"), "no final text from the stream")
            browser.find_element("id", "mic").click()  # stop
            wait_for(
                browser,
                lambda b: b.find_element("id", "live").get_attribute("data-state") == "done",
                "the stream did not finish",
            )
        heard = np.concatenate(fed)  # [n], as the page sent it
        assert_heard_whole(checked_chunk(heard), sent)
        assert text_of(browser, "live-final") == transcript_of(server.state.service, heard)
        assert not browser.find_element("id", "live-error").is_displayed()

        # Upload: transcript and word times.
        browser.find_element("id", "file").send_keys(str(wav))
        wait_for(browser, lambda b: text_of(b, "file-text"), "no transcript for the upload")
        assert text_of(browser, "file-text") == expected.text
        rows = browser.find_elements("css selector", "#words tbody tr")
        assert [r.find_element("css selector", "td").text for r in rows] == expected.text.split()
        shot = tmp_path / "serve.png"
        browser.save_screenshot(str(shot))

        # A bad file: a clear error, and the page still works.
        bad = tmp_path / "notes.wav"
        bad.write_text("not audio at all")
        browser.find_element("id", "file").send_keys(str(bad))
        wait_for(browser, lambda b: b.find_element("id", "file-error").is_displayed(), "no error")
        assert "notes.wav" in text_of(browser, "file-error")

        # Phone width: nothing wider than the screen.
        browser.set_window_size(375, 800)
        time.sleep(0.3)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0
    finally:
        browser.quit()
    check_screenshot(shot)


def check_screenshot(path: Path) -> None:
    import matplotlib.image

    assert path.stat().st_size > 15_000, "the screenshot is suspiciously small"
    pixels = matplotlib.image.imread(str(path))[..., :3]  # [H, W, 3] in 0..1
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert float(np.std(pixels)) > 0.05, "the screenshot is nearly uniform"
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_page_sends_the_api_key_the_user_types(served, tmp_path):
    from selenium.webdriver.common.keys import Keys

    model_dir, _ = served
    server = start_server(model_dir, api_key="s3cret", endpointing=ENDPOINTING)
    wav = tmp_path / "speech.wav"
    sf.write(wav, tone_waveform(PHRASES[0]), RATE, subtype="PCM_16")
    browser = make_browser(wav)
    try:
        browser.get(server.url + "/")
        wait_for(browser, lambda b: b.find_element("id", "mic").is_enabled(), "page not ready")
        assert browser.find_element("id", "api-key").is_displayed()
        browser.find_element("id", "file").send_keys(str(wav))  # no key yet: refused
        wait_for(browser, lambda b: b.find_element("id", "file-error").is_displayed(), "no error")
        assert "API key" in text_of(browser, "file-error")
        browser.find_element("id", "api-key").send_keys("s3cret", Keys.TAB)
        browser.find_element("id", "file").send_keys(str(wav))
        wait_for(browser, lambda b: text_of(b, "file-text"), "no transcript with the key")
        assert not browser.find_element("id", "file-error").is_displayed()
        browser.find_element("id", "mic").click()  # the stream sends the key in its config
        wait_for(browser, lambda b: text_of(b, "live-final"), "no final text with the key")
        assert not browser.find_element("id", "live-error").is_displayed()
    finally:
        browser.quit()
        server.stop()
