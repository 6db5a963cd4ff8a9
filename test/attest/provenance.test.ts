import { describe, expect, it } from "vitest";
import { provenanceStatement, SLSA_V1, SLSA_V02, type ProvenanceInput } from "../../src/attest/provenance.js";
import { attestationManifest, subjectsFor } from "../../src/attest/statement.js";
import { digestOf, type Digest } from "../../src/oci/digest.js";

const input: ProvenanceInput = {
  builderVersion: "0.1.0",
  dockerfile: { name: "Dockerfile", sha256: "ab".repeat(32) },
  buildArgs: { VERSION: "1.2", NPM_TOKEN: "s3cr3t-value-123" },
  target: "app",
  platforms: ["linux/amd64", "linux/arm64"],
  secretIds: ["npmrc"],
  materials: [{ uri: "pkg:docker/127.0.0.1:5000/base/busybox@latest?platform=linux%2Famd64", digest: { sha256: "cd".repeat(32) } }],
  steps: [{ stage: "app", instruction: "RUN make", line: 3, cacheKey: "sha256:" + "ef".repeat(32), cached: true }],
  sourceDateEpoch: 1700000000,
  builderPlatform: "linux/amd64",
};

const parse = (b: Uint8Array) => JSON.parse(Buffer.from(b).toString());
const subject = subjectsFor(("sha256:" + "12".repeat(32)) as Digest, ["127.0.0.1:5000/app:v1"], "linux/amd64");

describe("SLSA provenance", () => {
  it("max mode records build args with secret-looking values redacted, secret ids, and steps; never the secret", () => {
    const s = provenanceStatement(subject, input, { mode: "max", version: "v1" });
    const text = Buffer.from(s.bytes).toString();
    expect(text).not.toContain("s3cr3t-value-123");
    const st = parse(s.bytes);
    expect(st._type).toBe("https://in-toto.io/Statement/v0.1");
    expect(st.predicateType).toBe(SLSA_V1);
    expect(st.subject).toEqual([{ name: "pkg:docker/127.0.0.1:5000/app:v1?platform=linux%2Famd64", digest: { sha256: "12".repeat(32) } }]);
    const req = st.predicate.buildDefinition.externalParameters.request;
    expect(req.args).toMatchObject({ "build-arg:VERSION": "1.2", "build-arg:NPM_TOKEN": "[redacted]", target: "app", platform: "linux/amd64,linux/arm64" });
    expect(req.secrets).toEqual([{ id: "npmrc" }]);
    expect(st.predicate.buildDefinition.resolvedDependencies).toEqual(input.materials);
    expect(st.predicate.buildDefinition.internalParameters.buildConfig.steps[0]).toMatchObject({ instruction: "RUN make", cached: true });
    expect(st.predicate.runDetails.builder.version).toEqual({ ocibuild: "0.1.0" });
    expect(st.predicate.runDetails.metadata.startedOn).toBe("2023-11-14T22:13:20Z");
  });

  it("min mode leaves out build args, secret ids and steps, as BuildKit's min mode does", () => {
    const st = parse(provenanceStatement(subject, input, { mode: "min", version: "v1" }).bytes);
    const req = st.predicate.buildDefinition.externalParameters.request;
    expect(Object.keys(req.args).filter((k) => k.startsWith("build-arg:"))).toEqual([]);
    expect(req.secrets).toBeUndefined();
    expect(st.predicate.buildDefinition.internalParameters.buildConfig).toBeUndefined();
    expect(st.predicate.buildDefinition.resolvedDependencies).toHaveLength(1);
  });

  it("is byte-identical for the same inputs with SOURCE_DATE_EPOCH, and offers v0.2", () => {
    const a = provenanceStatement(subject, input, { mode: "max", version: "v1" });
    const b = provenanceStatement(subject, { ...input }, { mode: "max", version: "v1" });
    expect(digestOf(a.bytes)).toBe(digestOf(b.bytes));
    const v02 = parse(provenanceStatement(subject, input, { mode: "max", version: "v0.2" }).bytes);
    expect(v02.predicateType).toBe(SLSA_V02);
    expect(v02.predicate.materials).toEqual(input.materials);
    expect(v02.predicate.invocation.parameters.args["build-arg:NPM_TOKEN"]).toBe("[redacted]");
  });

  it("stores statements in an attestation manifest laid out as BuildKit's", () => {
    const image = ("sha256:" + "12".repeat(32)) as Digest;
    const m = attestationManifest(image, [provenanceStatement(subject, input, { mode: "min", version: "v1" })]);
    expect(m.indexEntry).toMatchObject({ mediaType: "application/vnd.oci.image.manifest.v1+json", platform: { architecture: "unknown", os: "unknown" }, annotations: { "vnd.docker.reference.digest": image, "vnd.docker.reference.type": "attestation-manifest" } });
    expect(m.manifest.parsed.layers).toEqual([expect.objectContaining({ mediaType: "application/vnd.in-toto+json", annotations: { "in-toto.io/predicate-type": SLSA_V1 } })]);
    expect(parse(m.config.bytes)).toEqual({ architecture: "unknown", os: "unknown", config: {}, rootfs: { type: "layers", diff_ids: [m.layers[0]!.descriptor.digest] } });
  });
});
