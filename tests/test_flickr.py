"""Flickr sources through a loopback stand-in of the REST API (flickr.com is unreachable here)."""

from __future__ import annotations

import pytest

from tests.flickr_standin import ALBUM_ID, API_KEY, OWNER, flickr_standin


@pytest.fixture()
def flickr(project, media_root, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", API_KEY)
    with flickr_standin(media_root) as url:
        project.set_params(flickr__api_url=f"{url}/services/rest/", flickr__web_url=url)
        yield url


def test_a_search_keeps_owner_licence_and_title_and_fetches_videos_with_ytdlp(project, flickr):
    project.write_sources([{"kind": "flickr_search", "text": "portrait", "tags": ["portrait"]}])
    assert project.download() == 0
    media = project.media().set_index("media_id")
    # 5002 is "All Rights Reserved": the default licence filter keeps it out of the search
    assert list(media.index) == ["flickr-5001", "flickr-5003", "flickr-5004"]
    assert list(media.licence) == ["Attribution License", "Public Domain Dedication (CC0)",
                                   "Attribution-ShareAlike License"]
    assert set(media.uploader) == {"Ada Lens"}
    assert set(media.source) == {"flickr"}
    assert media.loc["flickr-5001", "title"] == "Smiling at the market"
    assert media.loc["flickr-5001", "url"] == f"{flickr}/photos/{OWNER}/5001/"
    assert list(media.media_type) == ["photo", "photo", "video"]
    assert media.loc["flickr-5004", "fps"] == pytest.approx(30.0)
    assert project.failures().empty


def test_a_search_pages_through_results(project, flickr):
    project.set_params(flickr__per_page=1)
    project.write_sources([{"kind": "flickr_search", "tags": ["portrait"], "media": "photos", "max_results": 2}])
    assert project.download() == 0
    assert list(project.media().media_id) == ["flickr-5001", "flickr-5003"]


def test_an_album_refuses_photos_outside_the_allowed_licences(project, flickr):
    project.write_sources([{"kind": "flickr_album", "url": f"https://www.flickr.com/photos/{OWNER}/albums/{ALBUM_ID}"}])
    assert project.download() == 0
    assert list(project.media().media_id) == ["flickr-5001", "flickr-5004"]
    [failure] = project.failures().itertuples()
    assert failure.url == f"{flickr}/photos/{OWNER}/5002/"
    assert failure.reason.startswith("licence 'All Rights Reserved' (id 0) is not among the allowed ones")


def test_a_single_photo_and_a_rerun_that_fetches_nothing(project, flickr, media_root):
    project.write_sources([{"kind": "flickr_photo", "url": f"https://www.flickr.com/photos/{OWNER}/5003"}])
    assert project.download() == 0
    [row] = project.media().itertuples()
    assert (row.media_id, row.uploader, row.width) == ("flickr-5003", "Ada Lens", 512)
    first = project.table.read_text()
    assert project.download() == 0
    assert project.table.read_text() == first


def test_api_errors_and_a_missing_key_are_recorded(project, flickr, media_server, monkeypatch):
    project.write_sources([
        {"kind": "flickr_photo", "photo_id": 999},
        {"kind": "flickr_search", "text": "portrait"},
        {"kind": "url", "url": f"{media_server.url}/astronaut.jpg"},
    ])
    monkeypatch.setenv("FLICKR_API_KEY", "wrong")
    assert project.download() == 0
    assert list(project.failures().reason) == [
        "flickr.photos.getInfo: Flickr error 100: Invalid API Key (Key has invalid format)",
        "flickr.photos.search: Flickr error 100: Invalid API Key (Key has invalid format)",
    ]
    monkeypatch.setenv("FLICKR_API_KEY", API_KEY)
    assert project.download() == 0
    assert project.failures().reason[0] == "flickr.photos.getInfo: Flickr error 1: Photo not found"
    monkeypatch.delenv("FLICKR_API_KEY")
    assert project.download() == 0
    assert all(r.startswith("FLICKR_API_KEY is not set") for r in project.failures().reason)


def test_the_api_key_never_reaches_a_table_or_the_log(project, flickr, monkeypatch, caplog):
    monkeypatch.setenv("FLICKR_API_KEY", "secret-key-0123456789")
    project.set_params(flickr__api_url=f"{flickr}/services/gone/")  # the API answers 404 here
    project.write_sources([{"kind": "flickr_search", "text": "portrait"}, {"kind": "flickr_photo", "photo_id": 5001}])
    with pytest.raises(Exception, match="nothing could be downloaded"):
        project.download()
    reasons = list(project.failures().reason)
    assert reasons[0].startswith("flickr.photos.search:") and "HTTP 404" in reasons[0]
    assert "secret-key" not in project.failures_file.read_text() + caplog.text


def test_a_narrower_licence_filter_drops_what_was_downloaded(project, flickr):
    project.write_sources([{"kind": "flickr_album", "album_id": ALBUM_ID, "user_id": OWNER}])
    project.download()
    assert list(project.media().media_id) == ["flickr-5001", "flickr-5004"]
    project.set_params(flickr__licenses=[5])
    assert project.download() == 0
    assert list(project.media().media_id) == ["flickr-5004"]
    assert project.failures().reason[0].startswith("licence 'Attribution License' (id 4)")


@pytest.mark.parametrize("outage", ["api gone", "key unset"])
def test_an_outage_never_shrinks_what_was_had(project, flickr, media_server, monkeypatch, capsys, outage):
    project.write_sources([{"kind": "flickr_search", "text": "portrait"}, {"kind": "flickr_photo", "photo_id": 5003},
                           {"kind": "url", "url": f"{media_server.url}/london_001_03.jpg"}])
    assert project.download() == 0
    before = project.media()
    assert len(before) == 4
    if outage == "api gone":
        project.set_params(flickr__api_url=f"{flickr}/services/gone/")
        reason = "flickr.photos.search: http://127.0.0.1"
    else:
        monkeypatch.delenv("FLICKR_API_KEY")
        reason = "FLICKR_API_KEY is not set"
    assert project.download() == 0
    media = project.media()
    assert list(media.media_id) == list(before.media_id)  # not one fewer
    flickr_rows = media[media.source == "flickr"]
    # the single photo is asked for by id: known without asking Flickr, so it counts as checked
    assert list(flickr_rows.media_id) == ["flickr-5001", "flickr-5003", "flickr-5004"]
    assert list(flickr_rows.checked_this_run) == [False, True, False]
    assert all(r.startswith(reason) for r in flickr_rows.unchecked_reason.iloc[[0, 2]])
    [failure] = project.failures().itertuples()
    assert failure.reason.startswith(reason)
    out = capsys.readouterr().out
    assert "4 media (0 new, 2 already had, 2 kept from a source that could not be listed), 1 failed" in out
