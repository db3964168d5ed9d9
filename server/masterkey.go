package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/identity"
)

func newMasterKeyCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	mk := &cobra.Command{
		Use:   "master-key",
		Short: "Rotate the master key",
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new primary master key, keeping the older ones",
		Long: `rotate starts a master key rotation: it generates a new master key and makes it the
primary, keeping the older keys so that what they sealed stays readable.

With <data_dir>/master.key, it rewrites the file atomically with the new key first and
the older ones after it. With PALYRA_MASTER_KEY, it writes nothing: it prints the new
key once on stdout, to be put first in PALYRA_MASTER_KEY (keys separated by commas).

Then: give every replica the new keys and restart each (palyrad reads its master keys
at start); run 'palyra master-key rewrap', which re-wraps every wrapped key (the CA's
sealed key, ...) to the new primary once every live replica has it; when
'palyra master-key status' shows no wrapped key under an older key, remove the older
keys from every replica's master keys.`,
		Example: "  palyrad master-key rotate --data-dir ./var",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), getenv)
			if err != nil {
				return err
			}
			if cfg.MasterKey != "" {
				keys, _, err := identity.LoadKeyring(cfg.DataDir, cfg.MasterKey)
				if err != nil {
					return err
				}
				key := identity.GenerateMasterKey()
				ring, _, err := identity.LoadKeyring("", key)
				if err != nil {
					return err
				}
				fmt.Fprintln(stdout, key)
				fmt.Fprintf(stderr, "new master key %s (printed once on stdout; nothing was written). The keys are read from\n"+
					"PALYRA_MASTER_KEY: set it to the new key, a comma, then its current value (%s), on every\n"+
					"replica, and restart each; then run 'palyra master-key rewrap'.\n",
					ring.Primary().ID(), strings.Join(keys.IDs(), ", "))
				return nil
			}
			keys, err := identity.RotateMasterKeyFile(cfg.DataDir, time.Now())
			if err != nil {
				return err
			}
			var older []string
			for _, k := range keys.Older() {
				older = append(older, k.ID())
			}
			fmt.Fprintf(stdout, "master.key in %s now holds the new primary key %s, then %s.\n"+
				"Next: give every replica this master.key (or these keys) and restart each; then run\n"+
				"'palyra master-key rewrap'.\n", cfg.DataDir, keys.Primary().ID(), strings.Join(older, ", "))
			return nil
		},
	}
	mk.AddCommand(rotate)
	return mk
}
