"""aiocoap serving an observable resource.

Usage: observable_server.py PORT

Serves /counter on 127.0.0.1:PORT (coap and coap+tcp) and PORT+3000 (coap+ws), aiocoap's
default server transports: a GET answers "count=N"; N goes up every 0.3 s and every observer
gets a notification. Runs until killed.
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource


class Counter(resource.ObservableResource):
    def __init__(self):
        super().__init__()
        self.count = 0

    async def tick(self):
        while True:
            await asyncio.sleep(0.3)
            self.count += 1
            self.updated_state()

    async def render_get(self, request):
        return aiocoap.Message(
            code=aiocoap.CONTENT,
            payload=f"count={self.count}".encode(),
            content_format=0,
        )


async def main(port):
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    counter = Counter()
    site.add_resource(["counter"], counter)
    await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    print("ready", flush=True)
    await counter.tick()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: observable_server.py PORT")
    asyncio.run(main(int(sys.argv[1])))
