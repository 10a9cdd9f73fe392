// What ending a session means to oidc-provider: its Session record goes, the grants it holds are
// revoked with their tokens (as its own end_session does), and clients with a back-channel logout
// URI are told.
import type { ProviderSessionOps } from '../sessions/service.ts';
import type { PrismaClient } from '../store/database.ts';
import { grantIdsOfAccount } from '../store/oidc-records.ts';
import type { Provider } from './provider.ts';

export function providerSessionOps(provider: Provider, prisma: PrismaClient): ProviderSessionOps {
  return {
    grantsOf: (accountId, clientId) => grantIdsOfAccount(prisma, accountId, clientId),
    async destroySession(storageId) {
      await provider.Session.adapter.destroy(storageId);
    },
    async revokeGrant(grantId) {
      await Promise.all([
        provider.AccessToken.revokeByGrantId(grantId),
        provider.RefreshToken.revokeByGrantId(grantId),
        provider.AuthorizationCode.revokeByGrantId(grantId),
        provider.Grant.adapter.destroy(grantId),
      ]);
    },
    async backchannelLogout(clientId, accountId, sid) {
      const client = (await provider.Client.find(clientId)) as unknown as { backchannelLogoutUri?: string; backchannelLogout(sub: string, sid: string): Promise<void> } | undefined;
      if (!client?.backchannelLogoutUri) return false;
      await client.backchannelLogout(accountId, sid);
      return true;
    },
  };
}
