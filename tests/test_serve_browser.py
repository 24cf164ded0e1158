"""The `stenograph serve` page in Debian's headless Chromium (slow; runs in CI).

Chromium's fake microphone plays a WAV the test writes, so the page's live path
(getUserMedia, the AudioWorklet resampling to the model's rate, the WebSocket) hears
a known recording; the page must show the offline transcription of that file, for
the live microphone and for an upload. A screenshot is saved and must not be blank.
"""

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


def shift_stable_phrase(model_dir: Path, endpointing: RedecodeEndpointing) -> str:
    """A phrase the live path transcribes like the file, wherever in 10 ms it starts.

    A live segment is cut on the stream's 10 ms grid, not where the file starts; a
    tiny test model's output can hinge on those milliseconds (a real model's does
    not). Each phrase is streamed here, without a browser, behind 0-9 ms of extra
    lead-in through the same `RedecodeStream`; the first whose every transcript equals
    the file's offline transcript is used.
    """
    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.serve.redecode import RedecodeStream
    from stenograph.recipes.transcribe import load_acoustic_model

    model = load_acoustic_model(str(model_dir))
    decoder = make_decoder("greedy", model.vocabulary)

    def log_probs_one(samples):
        log_probs, lengths = model.log_probs(samples[None], np.array([len(samples)]))
        return log_probs[0, : lengths[0]]  # [T, C]

    for text in PHRASES[:8]:
        phrase = tone_waveform(text)
        offline = log_probs_one(phrase)
        expected = decoder.decode_batch(offline[None], np.array([len(offline)]))[0].text
        heard = set()
        for shift_ms in (0, 2, 4, 5, 7, 9):
            stream = RedecodeStream(
                log_probs_one, decoder, model.vocabulary, RATE, model.seconds_per_frame, endpointing
            )
            lead = np.zeros(RATE // 3 + shift_ms * RATE // 1000, np.float32)
            stream.feed(np.concatenate([lead, phrase, np.zeros(RATE, np.float32)]))
            heard.add(stream.finish().text)
        if heard == {expected} and expected:
            return text
    pytest.fail("the test model transcribes every phrase differently at some 0-9 ms shift")


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
    sf.write(
        wav, tone_waveform(shift_stable_phrase(model_dir, ENDPOINTING)), RATE, subtype="PCM_16"
    )
    expected = offline_transcript(model_dir, wav)
    assert expected.text
    browser = make_browser(wav)
    try:
        browser.get(server.url + "/")
        wait_for(browser, lambda b: b.find_element("id", "mic").is_enabled(), "page not ready")
        assert "Ready" in text_of(browser, "status")

        # Live: the fake microphone plays the file once, then silence closes the segment.
        browser.find_element("id", "mic").click()
        wait_for(browser, lambda b: text_of(b, "live-final"), "no final text from the stream")
        browser.find_element("id", "mic").click()  # stop
        wait_for(
            browser,
            lambda b: b.find_element("id", "live").get_attribute("data-state") == "done",
            "the stream did not finish",
        )
        assert text_of(browser, "live-final") == expected.text
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
