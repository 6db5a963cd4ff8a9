export { Authenticator, scopeStrings, type TokenSender } from "./authenticator.js";
export { type Challenge, parseChallenges } from "./challenge.js";
export { type Credential, CredentialStore, type CredentialStoreOptions, normalizeAuthKey, authKeyScope } from "./config.js";
