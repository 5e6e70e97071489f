// Objects two parts share through PartContext.shared (created by whichever part starts first).

import { Rendezvous } from "../../dns/rendezvous.ts";
import type { PartContext } from "../parts.ts";

export function sharedRendezvous(context: PartContext): Rendezvous {
  let rendezvous = context.shared.get("rendezvous") as Rendezvous | undefined;
  if (!rendezvous) {
    rendezvous = new Rendezvous();
    context.shared.set("rendezvous", rendezvous);
  }
  return rendezvous;
}
