// What a directory's bind refusal means. Active Directory (and Samba's AD DC) put the reason in
// the diagnostic message of result 49, e.g. "80090308: LdapErr: DSID-0C0903A9, comment:
// AcceptSecurityContext error, data 532, v1db1". Strangers learn nothing from the screens: until
// the password is proven right, every refusal reads as a wrong password.

export type BindRefusal =
  | 'invalid_credentials' // 52e (and 525, no such user): a wrong password
  | 'not_allowed_now' // 530 logon hours, 531 workstation: the password was right
  | 'password_expired' // 532
  | 'must_change_password' // 773
  | 'account_disabled' // 533
  | 'account_expired' // 701
  | 'account_locked'; // 775

const subCodes: Record<string, BindRefusal> = {
  '525': 'invalid_credentials',
  '52e': 'invalid_credentials',
  '530': 'not_allowed_now',
  '531': 'not_allowed_now',
  '532': 'password_expired',
  '533': 'account_disabled',
  '701': 'account_expired',
  '773': 'must_change_password',
  '775': 'account_locked',
};

/** The refusal in an invalid-credentials answer: its AD sub-code, or a plain wrong password. */
export function bindRefusalOf(diagnostic: string): BindRefusal {
  const code = /\bdata ([0-9a-f]{3,4})\b/i.exec(diagnostic)?.[1]?.toLowerCase();
  return (code && subCodes[code]) || 'invalid_credentials';
}

/**
 * Whether the user may be told the account's state: AD sends these sub-codes only after the
 * password was right — except 775 (locked), which it sends whatever the password, so a locked
 * account reads like a wrong password (and counts as a failure) to whoever typed it.
 */
export const tellsAccountState = (refusal: BindRefusal): boolean => refusal !== 'invalid_credentials' && refusal !== 'account_locked';
