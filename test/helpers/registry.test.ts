import { describe, expect, it } from "vitest";
import { haveRegistry, startRegistry } from "./registry.js";

describe.skipIf(!haveRegistry())("test registry helper (needs docker-registry)", () => {
  it("starts a registry that answers /v2/ on a free port and stops it", async () => {
    const reg = await startRegistry();
    try {
      const res = await fetch(`${reg.url}/v2/`);
      expect(res.status).toBe(200);
      expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    } finally {
      await reg.stop();
    }
    await expect(fetch(`${reg.url}/v2/`)).rejects.toThrow();
  });
});
