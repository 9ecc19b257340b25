"""A loopback stand-in for the Flickr REST API (flickr.com cannot be reached from here).

It answers the methods the download stage calls, in the JSON shapes Flickr documents
(``format=json&nojsoncallback=1``), and serves the photos and the video's page from the test
media folder. Licence ids and names are Flickr's own.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from pipeline.mirror import RangeRequestHandler, serve

API_KEY = "test-key"
OWNER = "12345678@N00"
LICENSES = [
    (0, "All Rights Reserved", ""),
    (1, "Attribution-NonCommercial-ShareAlike License", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    (4, "Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    (5, "Attribution-ShareAlike License", "https://creativecommons.org/licenses/by-sa/2.0/"),
    (9, "Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/"),
]
# id -> what Flickr knows of it, and which test media file stands for it
PHOTOS = {
    "5001": {"title": "Smiling at the market", "license": 4, "media": "photo", "file": "london_002_08.jpg",
             "tags": ["portrait", "smile"], "ownername": "Ada Lens"},
    "5002": {"title": "Neutral portrait", "license": 0, "media": "photo", "file": "london_001_03.jpg",
             "tags": ["portrait"], "ownername": "Ada Lens"},
    "5003": {"title": "Astronaut portrait", "license": 9, "media": "photo", "file": "astronaut.jpg",
             "tags": ["portrait", "space"], "ownername": "Ada Lens"},
    "5004": {"title": "Portrait clip", "license": 5, "media": "video", "file": "single_face.mp4",
             "tags": ["portrait", "video"], "ownername": "Ada Lens"},
}
ALBUM_ID = "72157600000000001"
ALBUMS = {ALBUM_ID: ["5001", "5002", "5004"]}


class FlickrStandIn(RangeRequestHandler):
    base_url = ""

    def send_head(self):  # noqa: ANN201
        url = urlparse(self.path)
        if url.path.rstrip("/") == "/services/rest":
            return self._api(parse_qs(url.query))
        if match := re.fullmatch(r"/img/(\d+)\.jpg", url.path):
            self.path = f"/{PHOTOS[match.group(1)]['file']}"
        elif match := re.fullmatch(r"/photos/[^/]+/(\d+)/?", url.path):
            self.path = f"/{PHOTOS[match.group(1)]['file']}"
        return super().send_head()

    def _listing(self, photo_id: str) -> dict:
        p = PHOTOS[photo_id]
        return {"id": photo_id, "owner": OWNER, "secret": "abc", "server": "65535", "farm": 66,
                "title": p["title"], "ispublic": 1, "isfriend": 0, "isfamily": 0,
                "license": str(p["license"]), "ownername": p["ownername"], "media": p["media"],
                "media_status": "ready", "url_l": f"{self.base_url}/img/{photo_id}.jpg",
                "height_l": 540, "width_l": 540}

    def _page(self, ids: list[str], q: dict) -> dict:
        per_page, page = int(q.get("per_page", ["100"])[0]), int(q.get("page", ["1"])[0])
        chunk = ids[(page - 1) * per_page: page * per_page]
        return {"page": page, "pages": max(1, -(-len(ids) // per_page)), "perpage": per_page,
                "total": len(ids), "photo": [self._listing(i) for i in chunk]}

    def _api(self, q: dict):  # noqa: ANN202
        method = q.get("method", [""])[0]
        if q.get("api_key", [""])[0] != API_KEY:
            return self._json({"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"})
        if method == "flickr.photos.licenses.getInfo":
            return self._json({"licenses": {"license": [{"id": i, "name": n, "url": u} for i, n, u in LICENSES]},
                               "stat": "ok"})
        if method == "flickr.photos.search":
            text = q.get("text", [""])[0].lower()
            tags = [t for t in q.get("tags", [""])[0].split(",") if t]
            licenses = {int(x) for x in q.get("license", [""])[0].split(",") if x}
            media = q.get("media", ["all"])[0]
            mode_all = q.get("tag_mode", ["any"])[0] == "all"
            ids = [
                i for i, p in PHOTOS.items()
                if text in " ".join([p["title"], *p["tags"]]).lower()  # Flickr's text search covers tags
                and (not tags or (all if mode_all else any)(t in p["tags"] for t in tags))
                and (not licenses or p["license"] in licenses)
                and media in ("all", p["media"] + "s")
            ]
            return self._json({"photos": self._page(ids, q), "stat": "ok"})
        if method == "flickr.photosets.getPhotos":
            album = q.get("photoset_id", [""])[0]
            if album not in ALBUMS:
                return self._json({"stat": "fail", "code": 1, "message": "Photoset not found"})
            listing = self._page(ALBUMS[album], q)
            for photo in listing["photo"]:
                del photo["owner"], photo["ownername"]  # an album's listing names the owner once
            return self._json({"photoset": {"id": album, "owner": OWNER, "ownername": "Ada Lens", **listing},
                               "stat": "ok"})
        photo_id = q.get("photo_id", [""])[0]
        if method in ("flickr.photos.getInfo", "flickr.photos.getSizes") and photo_id not in PHOTOS:
            return self._json({"stat": "fail", "code": 1, "message": "Photo not found"})
        if method == "flickr.photos.getInfo":
            p = PHOTOS[photo_id]
            return self._json({"photo": {
                "id": photo_id, "license": str(p["license"]), "media": p["media"],
                "owner": {"nsid": OWNER, "username": "adalens", "realname": p["ownername"]},
                "title": {"_content": p["title"]},
                "urls": {"url": [{"type": "photopage", "_content": f"{self.base_url}/photos/{OWNER}/{photo_id}/"}]},
            }, "stat": "ok"})
        if method == "flickr.photos.getSizes":
            return self._json({"sizes": {"canblog": 0, "canprint": 0, "candownload": 1, "size": [
                {"label": "Medium 640", "width": 540, "height": 540, "media": "photo",
                 "source": f"{self.base_url}/img/{photo_id}.jpg"},
                {"label": "Large", "width": 540, "height": 540, "media": "photo",
                 "source": f"{self.base_url}/img/{photo_id}.jpg"},
            ]}, "stat": "ok"})
        return self._json({"stat": "fail", "code": 112, "message": f'Method "{method}" not found'})

    def _json(self, body: dict):  # noqa: ANN202
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)


@contextmanager
def flickr_standin(media_root: Path) -> Iterator[str]:
    """Serve the stand-in; yields its base URL (the API is at ``/services/rest/``)."""

    class Handler(FlickrStandIn):
        pass

    with serve(media_root, handler=Handler) as url:
        Handler.base_url = url
        yield url
