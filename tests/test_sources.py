"""The source list: good entries parse, every malformed one is refused with its line and reason."""

from pathlib import Path

import pytest

from pipeline.sources import SourceListError, load_sources

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path


def test_the_repo_source_list_parses():
    sources = load_sources(REPO / "sources.yaml")
    assert len(sources) == 26
    assert {s.kind for s in sources} == {"url"}
    assert all(s.get("licence") and s.get("uploader") for s in sources)


def test_every_kind_parses(tmp_path):
    sources = load_sources(write(tmp_path, """
sources:
  - kind: youtube
    url: https://www.youtube.com/watch?v=abcdefghijk
  - kind: flickr_search
    text: smile
    tags: portrait, face
    licenses: [4, 9]
  - kind: flickr_album
    url: https://www.flickr.com/photos/someone/albums/72157600000000001
  - kind: flickr_album
    album_id: 72157600000000002
    user_id: "12345678@N00"
  - kind: flickr_photo
    photo_id: 5001
  - kind: url
    url: http://127.0.0.1:1/x.jpg
    licence: CC BY 4.0
  - kind: file
    path: /tmp/x.mp4
"""))
    assert [s.kind for s in sources] == ["youtube", "flickr_search", "flickr_album", "flickr_album",
                                         "flickr_photo", "url", "file"]
    assert [s.line for s in sources] == [3, 5, 9, 11, 14, 16, 19]
    assert sources[1]["tags"] == ["portrait", "face"]
    assert sources[4]["photo_id"] == "5001"


@pytest.mark.parametrize("text, line, reason", [
    ("sources:\n  - kind: vimeo\n    url: https://vimeo.com/1\n", 2, "unknown kind 'vimeo'"),
    ("sources:\n  - kind: youtube\n", 2, "youtube entry needs url"),
    ("sources:\n  - kind: youtube\n    url: https://youtu.be/x\n  - kind: youtube\n    link: x\n", 4,
     "unknown field(s) link"),
    ("sources:\n  - kind: url\n    url: ftp://example.org/a.jpg\n", 2, "must be an http(s) URL"),
    ("sources:\n  - kind: flickr_search\n    licenses: [4]\n", 2, "needs text or tags or user_id"),
    ("sources:\n  - kind: flickr_search\n    text: a\n    licenses: CC\n", 2, "'licenses' must be a list"),
    ("sources:\n  - kind: flickr_search\n    text: a\n    max_results: -3\n", 2, "positive integer"),
    ("sources:\n  - kind: flickr_search\n    text: a\n    tag_mode: some\n", 2, "'tag_mode' must be any or all"),
    ("sources:\n  - kind: flickr_photo\n    photo_id: abc\n", 2, "'photo_id' must be a number"),
    ("sources:\n  - kind: flickr_album\n    url: https://www.flickr.com/photos/x/123\n", 2, "not a Flickr album URL"),
    ("sources:\n  - kind: file\n    path: ''\n", 2, "'path' must be a non-empty string"),
    ("sources:\n  - https://youtu.be/x\n", 2, "an entry must be a mapping"),
    ("sources:\n  - kind: url\n    url: [unclosed\n", 4, "not valid YAML"),
    ("videos:\n  - kind: url\n", 1, "expected a top-level 'sources:' list"),
    ("sources: []\n", None, "is empty"),
    ("", None, "empty; expected a 'sources:' list"),
])
def test_malformed_lists_name_the_line_and_the_reason(tmp_path, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(SourceListError) as error:
        load_sources(path)
    message = str(error.value)
    assert reason in message
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:")


def test_a_missing_list_is_named(tmp_path):
    with pytest.raises(SourceListError, match="nowhere.yaml: the source list does not exist"):
        load_sources(tmp_path / "nowhere.yaml")


def test_a_repeated_entry_that_says_something_else_is_refused(tmp_path):
    path = write(tmp_path, """
sources:
  - kind: url
    url: http://127.0.0.1:1/x.jpg
    title: At the market
  - kind: url
    url: http://127.0.0.1:1/x.jpg
    title: Laughing
""")
    with pytest.raises(SourceListError, match=r":6: url http://127.0.0.1:1/x.jpg is already line 3's, with another "
                                              r"title \('Laughing', not 'At the market'\); keep one entry"):
        load_sources(path)


def test_a_repeated_entry_that_says_the_same_is_dropped_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, "sources:\n  - kind: youtube\n    url: https://youtu.be/abc\n"
                           "  - kind: youtube\n    url: https://youtu.be/abc\n")
    assert [s.line for s in load_sources(path)] == [2]
    assert f"{path}:4: repeats line 2; ignored" in caplog.text
