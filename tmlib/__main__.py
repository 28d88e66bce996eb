from tmlib.cli import main

raise SystemExit(main())
