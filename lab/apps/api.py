"""The lab's Python backend: a FastAPI app that nginx proxies to as the `api` site.

Run by api.service as `uvicorn --app-dir DIR/apps api:app --host ${HOST} --port ${PORT}`.
"""

import asyncio

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict:
    """Answers 200 with a small JSON body naming the service."""
    return {"service": "api", "ok": True}


@app.get("/slow")
async def slow(seconds: float = 10.0) -> dict:
    """Answers after `seconds` (at most 120), to make nginx's upstream timeouts real."""
    seconds = max(0.0, min(seconds, 120.0))
    await asyncio.sleep(seconds)
    return {"service": "api", "slept": seconds}
