// The registry helper lives in the library (src/testing) so that the demo and the benchmark use the same code.
export * from "../../src/testing/registry.js";
