// What the demo page's scripts find on `window`: socket.io-client's browser bundle
// (/vendor/socket.io.min.js) defines `io`.
declare const io: typeof import("socket.io-client").io;
