/* ssh_crypto_cost.c — the client CPU an SSH transport spends on aes128-ctr + hmac-sha2-256 per
 * MiB, as libssh2 1.10 calls OpenSSL (EVP_Cipher once per 16-byte block) and as a whole-packet
 * caller does (OpenSSH: one call per packet). No network: CPU seconds of this process.
 *   ssh_crypto_cost [MiB]    prints one line per way: "what seconds_per_256MiB"
 * Build: cc -O2 -o ssh_crypto_cost ssh_crypto_cost.c -lcrypto */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PACKET 32768                   /* an SFTP data packet's size, about */

static double cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 256;
  long packets = mib * 1048576 / PACKET;
  unsigned char key[16] = { 1 }, iv[16] = { 2 }, mkey[32] = { 3 }, mac[32];
  unsigned char *in = calloc(1, PACKET), *out = malloc(PACKET);
  unsigned int maclen;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!in || !out || !ctx || !EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL, key, iv)) return 1;
  double scale = 256.0 / (double)mib;

  double t = cpu();
  for (long p = 0; p < packets; p++)
    for (int o = 0; o < PACKET; o += 16)
      if (EVP_Cipher(ctx, out + o, in + o, 16) < 1) return 1;
  double per_block = cpu() - t;
  printf("aes128-ctr, EVP_Cipher per 16-byte block (libssh2 1.10): %.3f\n", per_block * scale);

  t = cpu();
  for (long p = 0; p < packets; p++)
    if (EVP_Cipher(ctx, out, in, PACKET) < 1) return 1;
  double per_packet = cpu() - t;
  printf("aes128-ctr, EVP_Cipher per 32 KiB packet (OpenSSH): %.3f\n", per_packet * scale);

  t = cpu();
  for (long p = 0; p < packets; p++)
    if (!HMAC(EVP_sha256(), mkey, sizeof mkey, in, PACKET, mac, &maclen)) return 1;
  printf("hmac-sha2-256 per 32 KiB packet: %.3f\n", (cpu() - t) * scale);

  t = cpu();
  for (long p = 0; p < packets; p++) memcpy(out, in, PACKET);
  printf("one memcpy of the data: %.3f\n", (cpu() - t) * scale);
  EVP_CIPHER_CTX_free(ctx);
  free(in);
  free(out);
  return 0;
}
