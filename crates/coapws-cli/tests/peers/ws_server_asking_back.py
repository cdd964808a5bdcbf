"""aiocoap as a CoAP-over-WebSockets *server* that asks its client back (role reversal).

Usage: ws_server_asking_back.py

Listens for coap+ws on 127.0.0.1, on a port the system picks, and prints "port=P" once ready.
GET /ask-back makes it send GET /whoami to the remote the request came from (over the same
WebSocket connection), and answer 2.05 with that answer's payload (5.02 if the client's answer
is not 2.xx or does not come within 10 s). Runs until killed.
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource


class AskBack(resource.Resource):
    def __init__(self):
        super().__init__()
        self.ctx = None

    async def render_get(self, request):
        question = aiocoap.Message(code=aiocoap.GET, uri_path=("whoami",))
        question.remote = request.remote
        try:
            answer = await asyncio.wait_for(self.ctx.request(question).response, 10)
        except Exception as e:  # noqa: BLE001 - reported to the requester
            return aiocoap.Message(code=aiocoap.BAD_GATEWAY, payload=f"asking back failed: {e!r}".encode())
        if not answer.code.is_successful():
            return aiocoap.Message(code=aiocoap.BAD_GATEWAY, payload=f"client answered {answer.code}".encode())
        return aiocoap.Message(code=aiocoap.CONTENT, payload=answer.payload)


async def main():
    ask_back = AskBack()
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["ask-back"], ask_back)
    # Port 0 is bound as is (only non-zero ports get aiocoap's +3000 for WebSockets).
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["ws"])
    ask_back.ctx = ctx
    ports = [
        sock.getsockname()[1]
        for ri in ctx.request_interfaces
        for server in getattr(getattr(ri, "token_interface", None), "_servers", [])
        for sock in server.sockets
    ]
    if not ports:
        sys.exit("could not find the port of the WebSocket server")
    print(f"port={ports[0]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
