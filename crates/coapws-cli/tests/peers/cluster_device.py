"""An aiocoap device behind NAT for the cluster tests: it connects out over CoAP over
WebSockets and registers with the Resource Directory there (aiocoap's own Registerer).

Usage: cluster_device.py RD_URI EP [READING]

Serves, over its own connection:
  /sensor   GET READING (default "21.5")
  /store    PUT keeps the body, GET returns it (block-wise both ways for large bodies)
  /counter  GET, observable: "count=N", N going up once a second
Prints "registered" once the registration is active, then stays until killed. Exits 2 if the
registration fails or does not happen within 20 s.
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap.resourcedirectory.client.register import Registerer


class Sensor(resource.Resource):
    def __init__(self, reading):
        super().__init__()
        self.reading = reading

    async def render_get(self, request):
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.reading.encode())


class Store(resource.Resource):
    def __init__(self):
        super().__init__()
        self.body = b""

    async def render_put(self, request):
        self.body = request.payload
        return aiocoap.Message(code=aiocoap.CHANGED)

    async def render_get(self, request):
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.body)


class Counter(resource.ObservableResource):
    def __init__(self):
        super().__init__()
        self.count = 0

    async def tick(self):
        while True:
            await asyncio.sleep(1)
            self.count += 1
            self.updated_state()

    async def render_get(self, request):
        return aiocoap.Message(code=aiocoap.CONTENT, payload=f"count={self.count}".encode())


async def main(rd_uri, ep, reading):
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["sensor"], Sensor(reading))
    site.add_resource(["store"], Store())
    counter = Counter()
    site.add_resource(["counter"], counter)
    asyncio.get_running_loop().create_task(counter.tick())
    ctx = await aiocoap.Context.create_client_context(transports=["ws"])
    ctx.serversite = site
    registerer = Registerer(ctx, rd=rd_uri, registration_parameters={"ep": ep})
    for _ in range(200):
        if registerer.state == "registered":
            break
        if registerer.state == "failed":
            sys.exit("registration failed")
        await asyncio.sleep(0.1)
    else:
        sys.exit(f"not registered within 20 s (state {registerer.state})")
    print("registered")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: cluster_device.py RD_URI EP [READING]")
    try:
        reading = sys.argv[3] if len(sys.argv) == 4 else "21.5"
        asyncio.run(main(sys.argv[1], sys.argv[2], reading))
    except SystemExit as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(2)
