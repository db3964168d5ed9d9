// What the pages share of the browser profiles: which capabilities browse with one, the
// address of a profile's page, the profiles a picker offers (the invoke form's input, an
// agent's browser tool), and reading them all again.
import { createConnectQueryKey, useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { BrowserProfileService, type BrowserProfile } from "../../../../gen/ts/palyra/browser/v1/browser_pb.js";
import { usePermission } from "../../session.js";

/** PROFILES_READ is the most profiles a picker reads (one page of ListBrowserProfiles). */
const PROFILES_READ = 500;

/** isBrowser says whether a capability browses with a browser profile (browser.*). */
export function isBrowser(capability: string): boolean {
  return capability.startsWith("browser.");
}

/** profileLink is the address of a profile's page. */
export function profileLink(name: string): string {
  return `/browser?profile=${encodeURIComponent(name)}`;
}

/** ProfileChoices are the profiles a picker offers: undefined until read (or when
 * unwanted); needs names the permission the principal lacks to list them, if it does. */
export interface ProfileChoices {
  profiles?: BrowserProfile[];
  error: unknown;
  needs?: string;
}

/** useProfileChoices lists the browser profiles while wanted and the principal may
 * (browser.read). */
export function useProfileChoices(wanted: boolean): ProfileChoices {
  const may = usePermission("browser.read");
  const q = useQuery(BrowserProfileService.method.listBrowserProfiles, { pageSize: PROFILES_READ }, { enabled: wanted && may });
  return { profiles: wanted ? q.data?.profiles : undefined, error: wanted ? q.error : undefined, needs: may ? undefined : "browser.read" };
}

/** useInvalidateProfiles reads every browser profile query again. */
export function useInvalidateProfiles() {
  const queryClient = useQueryClient();
  return () => queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: BrowserProfileService, cardinality: undefined }) });
}
