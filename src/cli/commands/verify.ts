/** `ocibuild verify --key PUB REF`: cosign key-based signature check, then the provenance and SBOM summary. */
import { OcibuildError } from "../../errors.js";
import { verify } from "../../api.js";
import { summariseVerification } from "../../sign/summary.js";
import { type FlagSpec, bool, helpText, parseFlags, str } from "../flags.js";
import type { Command } from "../io.js";
import { REGISTRY_FLAGS, registryOptionsFrom } from "./copy.js";

const SPECS: FlagSpec[] = [
  { names: ["key"], type: "string", valueName: "PATH", description: "the public key (PEM, as `cosign public-key` prints it) the signatures must verify with" },
  { names: ["json"], type: "boolean", description: "print what was verified as JSON (digests, signed references, attestation statements)" },
  ...REGISTRY_FLAGS,
];

const USAGE = `Usage: ocibuild verify --key PUB [flags] REF

Checks that REF (a tag or digest in a registry) carries a cosign signature that
verifies with the public key and names REF's own digest (for an index: the index
and each platform's manifest), then prints its provenance and SBOM summary (the
attestation manifests in the index, and signed .att attestations). Exits 1 when
no signature verifies.`;

export const verifyCommand: Command = async (args, io, signal) => {
  const p = parseFlags(args, SPECS);
  if (bool(p, "help")) {
    io.stdout.write(helpText(USAGE, SPECS, ["ocibuild verify --key cosign.pub ghcr.io/org/app:v1", "ocibuild verify --key cosign.pub --json localhost:5000/app@sha256:..."]));
    return 0;
  }
  if (p.positionals.length !== 1) {
    throw new OcibuildError("USAGE_MISSING_ARGUMENT", `verify takes one image reference, got ${p.positionals.length}`, { hint: "ocibuild verify --key PUB REF" });
  }
  const key = str(p, "key");
  if (!key) throw new OcibuildError("USAGE_MISSING_VALUE", "verify needs --key PATH (the public key)", { hint: "ocibuild verify --key cosign.pub REF" });
  // Blob reads are small and many: no per-blob progress lines.
  const r = await verify(p.positionals[0]!, { key, registry: { ...registryOptionsFrom(p, io), onProgress: undefined }, signal });
  io.stdout.write(bool(p, "json") ? `${JSON.stringify(r, null, 2)}\n` : summariseVerification(r, key));
  return 0;
};
