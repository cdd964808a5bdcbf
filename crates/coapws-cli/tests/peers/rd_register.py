"""aiocoap as a Resource Directory endpoint (RFC 9176) over CoAP over WebSockets.

Usage: rd_register.py RD_URI EP

Serves /sensor (rt=temperature) and /.well-known/core on a WebSocket client context, and
registers that site with the RD at RD_URI (e.g. coap+ws://127.0.0.1:PORT) as endpoint EP using
aiocoap's own registration client (aiocoap.resourcedirectory.client.register.Registerer, which
discovers /rd through /.well-known/core?rt=core.rd). Prints "registered" once the registration
is active, then stays connected, serving /sensor, until killed. Exits 2 if the registration
fails or does not happen within 20 s.
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap.resourcedirectory.client.register import Registerer


class Sensor(resource.Resource):
    rt = "temperature"

    async def render_get(self, request):
        return aiocoap.Message(code=aiocoap.CONTENT, payload=b"21.5")


async def main(rd_uri, ep):
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["sensor"], Sensor())
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
    if len(sys.argv) != 3:
        sys.exit("usage: rd_register.py RD_URI EP")
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except SystemExit as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(2)
