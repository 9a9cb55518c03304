// Loaded into Pi by omnikernel (`pi --mode rpc -e pi_mcp.ts`) when the kernel gives it MCP
// servers: Pi's CLI has no MCP client, so this extension is one, for HTTP servers only (the
// kernel's `notebook` server among them). OMNIKERNEL_MCP_SERVERS holds them as JSON
// ([{name, url, headers}]). At session start it lists each server's tools and registers them
// as Pi tools named mcp__SERVER__TOOL (the name Claude Code and Codex use); a call posts
// `tools/call` to the server and returns its text. pi_gate.ts still asks before each call.
export default function (pi: any) {
  const servers: any[] = JSON.parse(process.env.OMNIKERNEL_MCP_SERVERS || "[]");
  let ids = 0;

  async function rpc(server: any, method: string, params: any): Promise<any> {
    const response = await fetch(server.url, {
      method: "POST",
      headers: {
        ...server.headers,
        "Content-Type": "application/json",
        Accept: "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++ids, method, params }),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new Error(`MCP server ${server.name}: HTTP ${response.status} ${text.slice(0, 200)}`);
    }
    const data = JSON.parse(text);
    if (data.error) {
      throw new Error(`MCP server ${server.name}: ${data.error.message}`);
    }
    return data.result;
  }

  pi.on("session_start", async () => {
    for (const server of servers) {
      try {
        await rpc(server, "initialize", {
          protocolVersion: "2025-06-18",
          capabilities: {},
          clientInfo: { name: "omnikernel-pi", version: "1" },
        });
        const listed = await rpc(server, "tools/list", {});
        for (const tool of listed.tools || []) {
          pi.registerTool({
            name: `mcp__${server.name}__${tool.name}`,
            label: `${server.name}.${tool.name}`,
            description: tool.description || "",
            parameters: tool.inputSchema || { type: "object", properties: {} },
            async execute(_toolCallId: string, params: any) {
              const result = await rpc(server, "tools/call", {
                name: tool.name,
                arguments: params || {},
              });
              const text = (result.content || [])
                .map((block: any) => (block.type === "text" ? block.text : `[${block.type}]`))
                .join("\n");
              if (result.isError) {
                throw new Error(text || `${tool.name} failed`);
              }
              return { content: [{ type: "text", text }], details: {} };
            },
          });
        }
      } catch (error: any) {
        console.error(`omnikernel: MCP server ${server.name} is unavailable: ${error?.message}`);
      }
    }
  });
}
