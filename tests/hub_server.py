"""A local Hub for the tests: enough of the Hugging Face Hub's HTTP protocol for the real clients.

``huggingface_hub`` (create_repo, create_branch, preupload, NDJSON commit, LFS batch + basic PUT, repo info, tree,
paths-info, resolve with revisions and Range), ``transformers`` (``from_pretrained``, remote code, pipelines) and
``datasets`` (``load_dataset`` and streaming over HTTP) talk to it as to huggingface.co. Clients must run with
``HF_HUB_DISABLE_XET=1`` and ``HF_ENDPOINT`` set to :attr:`LocalHub.url` before they import any HF library.

Repos live in memory as commits (path → sha256 of the content); contents are stored once, by sha256, in a folder.
A commit applies all of its operations or none. Failures a test needs can be switched on: ``fail_commits`` (the
commit endpoint answers 500), ``revoked_tokens`` (tokens answered with 401, as after a revocation),
``revoke_after_upload`` (a token revoked in the middle of a push, after its first LFS upload).

Run standalone (``python tests/hub_server.py ROOT``) it prints its URL and serves until killed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".parquet", ".png", ".bin", ".pt", ".arrow", ".npy", ".gz", ".zip")
LFS_MIN_SIZE = 1_000_000
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An HTTP error answer: status, X-Error-Code and message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LocalHub:
    """The repos, their commits and the content store; thread-safe.

    Args:
        root: Folder for the content store.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        self.fail_commits = False
        self.revoked_tokens: set[str] = set()
        self.revoke_after_upload: str | None = None  # this token is revoked once an LFS upload has gone through
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    # -- content store -------------------------------------------------------------------------------------------
    def store(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self.root / "objects" / sha256
        if not path.exists():
            temporary = path.with_suffix(f".{threading.get_ident()}.tmp")
            temporary.write_bytes(content)
            temporary.replace(path)
        return sha256

    def has_object(self, sha256: str) -> bool:
        return (self.root / "objects" / sha256).is_file()

    def read(self, sha256: str) -> bytes:
        return (self.root / "objects" / sha256).read_bytes()

    # -- repos ---------------------------------------------------------------------------------------------------
    def repo(self, repo_type: str, repo_id: str) -> dict:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository {repo_type}/{repo_id} not found.")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> None:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, None, "You already created this repo")
            repo = {"private": private, "branches": {}, "commits": {}, "created": time.time()}
            self.repos[(repo_type, repo_id)] = repo
            self._new_commit(repo, "main", None, {".gitattributes": self._entry(GITATTRIBUTES, lfs=False)}, "init")

    def _entry(self, content: bytes, lfs: bool) -> dict:
        sha256 = self.store(content)
        return {"sha256": sha256, "size": len(content), "lfs": lfs, "oid": git_blob_oid(content)}

    def _new_commit(self, repo: dict, branch: str, parent: str | None, files: dict, message: str) -> str:
        sha = hashlib.sha1(json.dumps([parent, sorted(files), message, time.time_ns()]).encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "files": files, "message": message, "date": time.time()}
        repo["branches"][branch] = sha
        return sha

    def resolve(self, repo: dict, revision: str) -> str:
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, dict]:
        """Path → entry of a revision (for the tests' assertions)."""
        repo = self.repo(repo_type, repo_id)
        return repo["commits"][self.resolve(repo, revision)]["files"]

    def create_branch(self, repo: dict, branch: str, start: str | None) -> None:
        with self.lock:
            if branch in repo["branches"]:
                raise HubError(409, None, f"Reference already exists: refs/heads/{branch}")
            repo["branches"][branch] = self.resolve(repo, start or "main")

    def commit(self, repo: dict, revision: str, lines: list[dict]) -> str:
        """Applies one NDJSON commit atomically; returns the new commit's sha."""
        header = lines[0] if lines and lines[0].get("key") == "header" else None
        if header is None:
            raise HubError(400, None, "The commit payload must start with a header line.")
        with self.lock:
            head = self.resolve(repo, revision)
            if revision not in repo["branches"]:
                raise HubError(400, None, f"Cannot commit to {revision}: not a branch.")
            parent = header["value"].get("parentCommit")
            if parent and parent != head:
                raise HubError(412, None, f"A commit has happened since {parent}; the head is {head}.")
            files = dict(repo["commits"][head]["files"])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value["path"].strip("/")
                if key == "file":
                    files[path] = self._entry(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    if not self.has_object(value["oid"]):
                        raise HubError(422, None, f"LFS object {value['oid']} for {path} was never uploaded.")
                    content_size = (self.root / "objects" / value["oid"]).stat().st_size
                    pointer = lfs_pointer(value["oid"], content_size)
                    files[path] = {
                        "sha256": value["oid"],
                        "size": content_size,
                        "lfs": True,
                        "oid": git_blob_oid(pointer),
                        "pointer_size": len(pointer),
                    }
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, "EntryNotFound", f"{path} does not exist.")
                    del files[path]
                elif key == "deletedFolder":
                    files = {name: entry for name, entry in files.items() if not name.startswith(path + "/")}
                else:
                    raise HubError(400, None, f"Unknown commit operation {key!r}.")
            summary = header["value"].get("summary", "")
            return self._new_commit(repo, revision, head, files, summary)


class HubHandler(BaseHTTPRequestHandler):
    """One request: routes on method and path; errors answered the way the Hub answers them."""

    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    def log_message(self, format: str, *args) -> None:
        pass

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_length: int | None = None):
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers)

    def _token(self) -> str | None:
        authorization = self.headers.get("Authorization", "")
        return authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None

    def _check_read(self, repo: dict) -> None:
        token = self._token()
        if token in self.server.hub.revoked_tokens:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if repo["private"] and not token:
            raise HubError(404, "RepoNotFound", "Repository not found")

    def _check_write(self) -> None:
        token = self._token()
        if not token:
            raise HubError(401, None, "You must be authenticated to write (set HF_TOKEN).")
        if token in self.server.hub.revoked_tokens:
            raise HubError(401, None, "Invalid credentials in Authorization header")

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        body = self._body()  # always drained, so keep-alive connections stay in step
        split = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        segments = [unquote(piece) for piece in split.path.strip("/").split("/")] if split.path.strip("/") else []
        hub = self.server.hub
        hub.requests.append((self.command, split.path))
        try:
            self._route(segments, query, body)
        except HubError as error:
            self._error(error)
        except (KeyError, ValueError, json.JSONDecodeError) as error:
            self._error(HubError(400, None, f"Bad request: {error!r}"))

    # -- routes --------------------------------------------------------------------------------------------------
    def _route(self, segments: list[str], query: dict, body: bytes) -> None:
        hub, method = self.server.hub, self.command
        if method == "POST" and segments == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and segments == ["api", "validate-yaml"]:
            return self._json({"errors": [], "warnings": []})
        if method == "PUT" and len(segments) == 2 and segments[0] == "__lfs":
            return self._lfs_put(segments[1], body)
        if segments[:1] == ["api"] and len(segments) >= 4 and segments[1] in REPO_TYPES:
            repo_type, repo_id = REPO_TYPES[segments[1]], f"{segments[2]}/{segments[3]}"
            return self._api(method, hub.repo(repo_type, repo_id), repo_type, repo_id, segments[4:], query, body)
        repo_type = "model"
        if segments[:1] in (["datasets"], ["spaces"]):
            repo_type, segments = REPO_TYPES[segments[0]], segments[1:]
        if len(segments) >= 2 and segments[1].endswith(".git") and segments[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(hub.repo(repo_type, f"{segments[0]}/{segments[1][:-4]}"), json.loads(body))
        if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            repo = hub.repo(repo_type, f"{segments[0]}/{segments[1]}")
            return self._resolve(repo, segments[3], "/".join(segments[4:]))
        raise HubError(404, None, f"No route for {method} /{'/'.join(segments)}")

    def _create_repo(self, payload: dict) -> None:
        self._check_write()
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or "user"
        repo_id = f"{namespace}/{payload['name']}"
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        url = f"{self.server.hub.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        try:
            self.server.hub.create_repo(repo_type, repo_id, private)
        except HubError as error:  # the Hub answers a conflict with the existing repo's url
            return self._send(409, json.dumps({"error": error.message, "url": url}).encode())
        self._json({"url": url, "name": repo_id})

    def _api(self, method, repo, repo_type, repo_id, rest, query, body) -> None:
        hub = self.server.hub
        if rest[:1] in ([], ["revision"]) and method == "GET":
            self._check_read(repo)
            return self._json(self._repo_info(repo, repo_type, repo_id, rest[1] if rest else "main", query))
        if rest[:1] == ["tree"] and method == "GET":
            self._check_read(repo)
            return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if rest[:1] == ["paths-info"] and method == "POST":
            self._check_read(repo)
            form = parse_qs(body.decode())
            return self._paths_info(repo, rest[1], form.get("paths", []))
        if rest[:1] == ["refs"] and method == "GET":
            self._check_read(repo)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                for name, sha in repo["branches"].items()
            ]
            return self._json({"branches": branches, "converts": [], "tags": []})
        if rest[:1] == ["preupload"] and method == "POST":
            self._check_write()
            hub.resolve(repo, rest[1])
            files = json.loads(body)["files"]
            answer = [
                {
                    "path": entry["path"],
                    "uploadMode": "lfs"
                    if entry["path"].endswith(LFS_SUFFIXES) or entry["size"] >= LFS_MIN_SIZE
                    else "regular",
                    "shouldIgnore": False,
                }
                for entry in files
            ]
            return self._json({"files": answer, "commitOid": hub.resolve(repo, rest[1])})
        if rest[:1] == ["commit"] and method == "POST":
            self._check_write()
            if hub.fail_commits:
                raise HubError(500, None, "Internal Error - the commit was not applied")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            sha = hub.commit(repo, rest[1], lines)
            url = f"{hub.url}/{URL_PREFIXES[repo_type]}{repo_id}/commit/{sha}"
            return self._json({"commitUrl": url, "commitOid": sha, "pullRequestUrl": None, "success": True})
        if rest[:1] == ["branch"] and method == "POST":
            self._check_write()
            payload = json.loads(body) if body else {}
            hub.create_branch(repo, rest[1], payload.get("startingPoint"))
            return self._json({})
        raise HubError(404, None, f"No API route for {method} {'/'.join(rest)}")

    def _repo_info(self, repo, repo_type, repo_id, revision, query) -> dict:
        sha = self.server.hub.resolve(repo, revision)
        files = repo["commits"][sha]["files"]
        siblings = []
        for path, entry in sorted(files.items()):
            sibling = {"rfilename": path}
            if query.get("blobs") in ("1", "true", "True"):
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {"sha256": entry["sha256"], "size": entry["size"], "pointerSize": 134}
            siblings.append(sibling)
        modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo["commits"][sha]["date"]))
        return {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "private": repo["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": modified,
            "createdAt": modified,
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in files.values()),
        }

    def _tree_entry(self, path: str, entry: dict | None) -> dict:
        if entry is None:
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            item["lfs"] = {
                "oid": entry["sha256"],
                "size": entry["size"],
                "pointerSize": entry.get("pointer_size", 134),
            }
        return item

    def _tree(self, repo, revision, folder, query) -> None:
        files = repo["commits"][self.server.hub.resolve(repo, revision)]["files"]
        folder = folder.strip("/")
        prefix = folder + "/" if folder else ""
        if folder and not any(path.startswith(prefix) for path in files):
            raise HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        recursive = query.get("recursive") in ("1", "true", "True")
        items, folders = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix) :].split("/")
            for depth in range(1, len(relative)):
                sub = prefix + "/".join(relative[:depth])
                if sub not in folders and (recursive or depth == 1):
                    folders.add(sub)
                    items.append(self._tree_entry(sub, None))
            if recursive or len(relative) == 1:
                items.append(self._tree_entry(path, files[path]))
        self._json(items)

    def _paths_info(self, repo, revision, paths) -> None:
        files = repo["commits"][self.server.hub.resolve(repo, revision)]["files"]
        items = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                items.append(self._tree_entry(path, files[path]))
            elif any(name.startswith(path + "/") for name in files):
                items.append(self._tree_entry(path, None))
        self._json(items)

    def _lfs_batch(self, repo: dict, payload: dict) -> None:
        self._check_write()
        objects = []
        for item in payload["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if not self.server.hub.has_object(item["oid"]):
                answer["actions"] = {"upload": {"href": f"{self.server.hub.url}/__lfs/{item['oid']}", "header": {}}}
            objects.append(answer)
        self._json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, None, f"Uploaded content does not match its sha256 {oid}.")
        hub = self.server.hub
        hub.store(body)
        if hub.revoke_after_upload:
            hub.revoked_tokens.add(hub.revoke_after_upload)
        self._send(200, b"")

    def _resolve(self, repo: dict, revision: str, path: str) -> None:
        self._check_read(repo)
        sha = self.server.hub.resolve(repo, revision)
        entry = repo["commits"][sha]["files"].get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}")
        content = self.server.hub.read(entry["sha256"])
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
        }
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))})
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            first, last = match.groups()
            if first == "":  # a suffix: the last N bytes
                start, end = max(0, len(content) - int(last)), len(content) - 1
            else:
                start, end = int(first), min(len(content) - 1, int(last)) if last else len(content) - 1
            if start >= len(content):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(content)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return self._send(206, content[start : end + 1], headers)
        self._send(200, content, headers)


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: LocalHub) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.hub = hub
        hub.url = f"http://127.0.0.1:{self.server_address[1]}"


def start_hub(root: Path) -> tuple[LocalHub, HubHTTPServer]:
    """Starts a local Hub on a free loopback port in a daemon thread; ``server.shutdown()`` stops it."""
    hub = LocalHub(root)
    server = HubHTTPServer(hub)
    threading.Thread(target=server.serve_forever, name="local-hub", daemon=True).start()
    return hub, server


def repo_url(hub: LocalHub, repo_type: str, repo_id: str) -> str:
    return f"{hub.url}/{URL_PREFIXES[repo_type]}{quote(repo_id)}"


if __name__ == "__main__":
    hub, server = start_hub(Path(sys.argv[1]))
    print(hub.url, flush=True)
    threading.Event().wait()
