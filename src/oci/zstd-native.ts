/**
 * @toondepauw/node-zstd, statically imported here so that layer-zstd.ts can import this
 * module on first use: the CLI bundle (scripts/bundle.mjs) turns that into a lazy
 * require() of the native package, where a dynamic import() of the package itself
 * would fail inside the bundle's vm.Script ("A dynamic import callback was not
 * specified").
 */
export { Encoder } from "@toondepauw/node-zstd";
