"""A small client of the Flickr REST API: searches, albums, single photos and the licence list.

It speaks the documented JSON form of the API (``format=json&nojsoncallback=1``), with the key from
``FLICKR_API_KEY``. Only what the download stage needs is here: each item comes back as a
``FlickrItem`` that says who owns it, under which licence, and where to fetch it (an image URL for a
photo, the photo page for a video, which yt-dlp fetches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

# Extras asked for with every listing, so that one call gives all a media row needs.
EXTRAS = "license,owner_name,media,url_o,url_k,url_h,url_l,url_c,url_z"


class FlickrError(Exception):
    """The API refused a call (bad key, unknown photo, ...) or answered something unreadable."""


@dataclass
class FlickrItem:
    photo_id: str
    owner: str
    owner_name: str
    title: str
    license_id: int
    media: str  # "photo" or "video"
    image_url: str | None  # the chosen size of a photo; None for videos
    page_url: str


class FlickrClient:
    def __init__(self, api_url: str, web_url: str, api_key: str, session: requests.Session,
                 timeout: float, sizes: list[str], per_page: int = 100):
        self.api_url = api_url
        self.web_url = web_url.rstrip("/")
        self.api_key = api_key
        self.session = session
        self.timeout = timeout
        self.sizes = sizes
        self.per_page = per_page
        self._licenses: dict[int, dict[str, str]] | None = None

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        query = {"method": method, "api_key": self.api_key, "format": "json", "nojsoncallback": 1}
        query.update({k: v for k, v in params.items() if v is not None})
        # requests' own messages carry the whole URL, api_key included: name the method instead
        try:
            response = self.session.get(self.api_url, params=query, timeout=self.timeout)
        except requests.RequestException as e:
            raise FlickrError(f"{method}: no answer from {self.api_url} ({type(e).__name__})") from None
        if response.status_code >= 400:
            raise FlickrError(f"{method}: {self.api_url} answered HTTP {response.status_code} {response.reason}")
        try:
            body = response.json()
        except ValueError:
            raise FlickrError(f"{method}: the API at {self.api_url} did not answer JSON") from None
        if body.get("stat") != "ok":
            raise FlickrError(f"{method}: Flickr error {body.get('code')}: {body.get('message')}")
        return body

    def licenses(self) -> dict[int, dict[str, str]]:
        """Licence id -> {name, url}, asked once."""
        if self._licenses is None:
            body = self.call("flickr.photos.licenses.getInfo")
            self._licenses = {
                int(lic["id"]): {"name": lic["name"], "url": lic.get("url", "")}
                for lic in body["licenses"]["license"]
            }
        return self._licenses

    def licence_name(self, license_id: int) -> str:
        return self.licenses().get(license_id, {}).get("name", f"Flickr licence {license_id}")

    def _item(self, photo: dict[str, Any], owner: str | None = None, owner_name: str | None = None) -> FlickrItem:
        owner = photo.get("owner") or owner or ""
        image_url = next((photo[s] for s in self.sizes if photo.get(s)), None)
        return FlickrItem(
            photo_id=str(photo["id"]),
            owner=owner,
            owner_name=photo.get("ownername") or owner_name or owner,
            title=photo.get("title") or "",
            license_id=int(photo.get("license", 0)),
            media=photo.get("media", "photo"),
            image_url=image_url,
            page_url=f"{self.web_url}/photos/{owner}/{photo['id']}/",
        )

    def _pages(self, method: str, container: str, limit: int, **params: Any) -> Iterator[tuple[dict, dict]]:
        page, seen = 1, 0
        while seen < limit:
            body = self.call(method, page=page, per_page=min(self.per_page, limit), extras=EXTRAS, **params)
            listing = body[container]
            for photo in listing.get("photo", []):
                if seen >= limit:
                    return
                seen += 1
                yield listing, photo
            if page >= int(listing.get("pages", 1)) or not listing.get("photo"):
                return
            page += 1

    def search(self, *, text: str | None, tags: list[str] | None, tag_mode: str, user_id: str | None,
               licenses: list[int], media: str, limit: int) -> Iterator[FlickrItem]:
        params = {
            "text": text,
            "tags": ",".join(tags) if tags else None,
            "tag_mode": tag_mode if tags else None,
            "user_id": user_id,
            "license": ",".join(str(i) for i in licenses),
            "media": media,
            "content_type": 1,  # photos only, no screenshots or drawings
            "safe_search": 1,
            "sort": "relevance",
        }
        for _, photo in self._pages("flickr.photos.search", "photos", limit, **params):
            yield self._item(photo)

    def album(self, album_id: str, user_id: str | None, limit: int) -> Iterator[FlickrItem]:
        for listing, photo in self._pages("flickr.photosets.getPhotos", "photoset", limit,
                                          photoset_id=album_id, user_id=user_id):
            yield self._item(photo, owner=listing.get("owner"), owner_name=listing.get("ownername"))

    def photo(self, photo_id: str) -> FlickrItem:
        info = self.call("flickr.photos.getInfo", photo_id=photo_id)["photo"]
        sizes = self.call("flickr.photos.getSizes", photo_id=photo_id)["sizes"]["size"]
        photo = {
            "id": info["id"],
            "owner": info["owner"]["nsid"],
            "ownername": info["owner"].get("realname") or info["owner"].get("username"),
            "title": info.get("title", {}).get("_content", ""),
            "license": info.get("license", 0),
            "media": info.get("media", "photo"),
        }
        # getSizes names sizes by label; map them onto the url_* names of the listing extras.
        by_label = {"Original": "url_o", "Large 2048": "url_k", "Large 1600": "url_h", "Large": "url_l",
                    "Medium 800": "url_c", "Medium 640": "url_z"}
        for size in sizes:
            if size.get("media", "photo") == "photo" and size.get("label") in by_label:
                photo[by_label[size["label"]]] = size["source"]
        return self._item(photo)
