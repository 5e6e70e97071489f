// A stand-in for the Actions artifact service on 127.0.0.1 (CreateArtifact, blob PUT,
// FinalizeArtifact), recording what an uploader sent. Not a test file itself.

export type Received = {
  created?: Record<string, unknown>;
  finalized?: Record<string, unknown>;
  blob?: Uint8Array;
  auth?: string;
};

export function startFakeResults(): { url: string; received: Received; close: () => Promise<void> } {
  const received: Received = {};
  let base = "";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const path = new URL(request.url).pathname;
    if (path.endsWith(".ArtifactService/CreateArtifact")) {
      received.auth = request.headers.get("authorization") ?? undefined;
      received.created = await request.json();
      return Response.json({ ok: true, signedUploadUrl: `${base}blob/upload?sig=abc` });
    }
    if (path === "/blob/upload" && request.method === "PUT") {
      if (request.headers.get("x-ms-blob-type") !== "BlockBlob") {
        return new Response("bad blob type", { status: 400 });
      }
      received.blob = new Uint8Array(await request.arrayBuffer());
      return new Response(null, { status: 201 });
    }
    if (path.endsWith(".ArtifactService/FinalizeArtifact")) {
      received.finalized = await request.json();
      return Response.json({ ok: true, artifactId: "4242" });
    }
    return new Response("not found", { status: 404 });
  });
  base = `http://127.0.0.1:${server.addr.port}/`;
  return { url: base, received, close: () => server.shutdown() };
}

/** A JWT-shaped runtime token with the Actions.Results scope (unsigned: the fake does not check). */
export function fakeRuntimeToken(run = "run-1", job = "job-2"): string {
  const encode = (value: unknown) =>
    btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${encode({ alg: "none" })}.${
    encode({ scp: `Actions.GenericRead:x Actions.Results:${run}:${job}` })
  }.sig`;
}

/** Lists a zip's entries with python3's zipfile (an independent reader). */
export async function unzip(bytes: Uint8Array): Promise<Record<string, string>> {
  const file = await Deno.makeTempFile({ suffix: ".zip" });
  try {
    await Deno.writeFile(file, bytes);
    const out = await new Deno.Command("/usr/bin/python3", {
      args: [
        "-c",
        "import json,sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print(json.dumps({n: z.read(n).decode() for n in z.namelist()}))",
        file,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(file);
  }
}
