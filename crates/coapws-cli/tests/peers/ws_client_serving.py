"""aiocoap as a CoAP-over-WebSockets *client* that also serves resources (role reversal).

Usage: ws_client_serving.py URI PAYLOAD

Opens a WebSocket connection by sending GET URI. On that same connection it serves /whoami,
answering 2.05 with PAYLOAD, so the server can ask back. Prints the response as two lines,
"code=X.YY" then "payload=<text>", and exits 0; exits 2 on timeout or error.
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource


class WhoAmI(resource.Resource):
    def __init__(self, payload):
        super().__init__()
        self.payload = payload

    async def render_get(self, request):
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)


async def main(uri, payload):
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["whoami"], WhoAmI(payload))
    ctx = await aiocoap.Context.create_client_context(transports=["ws"])
    ctx.serversite = site
    try:
        request = aiocoap.Message(code=aiocoap.GET, uri=uri)
        response = await asyncio.wait_for(ctx.request(request).response, 20)
        print(f"code={response.code.dotted}")
        print(f"payload={response.payload.decode('utf-8', 'replace')}")
        sys.stdout.flush()
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: ws_client_serving.py URI PAYLOAD")
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2].encode()))
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(2)
