// Loaded into Pi by omnikernel (`pi --mode rpc -e pi_gate.ts`): every tool call waits for the
// kernel's decision. In RPC mode ctx.ui.confirm becomes an extension_ui_request on stdout that
// the kernel answers; a denial blocks the call with the kernel's reason.
export default function (pi: any) {
  pi.on("tool_call", async (event: any, ctx: any) => {
    const request = { toolCallId: event.toolCallId, toolName: event.toolName, input: event.input };
    const ok = await ctx.ui.confirm("omnikernel-approval", JSON.stringify(request));
    if (!ok) {
      return { block: true, reason: "Denied by the Omnigent kernel's policy (see the notebook cell)." };
    }
  });
}
